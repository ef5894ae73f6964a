"""The HSM bounds of the paper against the exact costs.

Claims (the paper's bounds on the BPTT-HSM cost, arXiv:1606.03401):

1. ``C(t, m) <= m * t^(1 + 1/m)``;
2. if ``t < m^a / a!`` then ``C(t, m) <= (a + 1) t``  (so m >= (a! t)^(1/a) gives O(t));
3. numerically ``C(t, m) < 4 * t^(1 + 1/m)`` for ``t < 10^5``, ``m < 10^3``;
4. regimes: m = 1 gives t(t+1)/2 (Theta(t^2)); m ~ log t gives O(t log t).

The per-length curves use the exact DP table. The numeric claim's range (10^5 x 10^3 cells) is
beyond a DP table on this machine, so it is checked on every cell with the HSM closed form
``(r+1) t - binom(m+r, m+1)`` (``membptt.planning.dp.c_hsm_closed``'s formula, vectorised
here); the closed form is checked equal to the DP on every cell of the DP table first.
"""

import math

import numpy as np
import pandas as pd
import theory_limits
from measure_lock import hold
from pipeline_common import finish, length_grid, start, write_csv

from membptt.planning import dp


def closed_form_column(m: int, t_max: int) -> np.ndarray:
    """C_HSM(t, m) for t = 1..t_max by the closed form (exact integers)."""
    th = [1]  # binom(m + r, m) for r = 0, 1, ...
    while th[-1] < t_max:
        r = len(th)
        th.append(math.comb(m + r, m))
    t = np.arange(1, t_max + 1, dtype=np.int64)
    r = np.searchsorted(np.array(th, dtype=np.int64), t, side="left")
    b = np.array([math.comb(m + rr, m + 1) for rr in range(len(th))], dtype=np.int64)
    return (r + 1) * t - b[r]


def main(smk):
    started = start(smk)
    p = smk.params
    ms = sorted(int(m) for m in p.memories)
    T = int(p.max_len)
    tab = theory_limits.solve(smk, T, max(ms), dp.hsm_family(), "theory.bounds")
    # 1. closed form equals the DP on the whole table
    mismatches = 0
    for m in range(1, max(ms) + 1):
        exact = np.asarray(tab.C[1:, m], dtype=float)
        mismatches += int(np.sum(exact != closed_form_column(m, T)))
    lengths = length_grid(2, T, 120, extra=[10, 100, 1000, 10000])
    rows = []
    for m in ms:
        for t in lengths:
            c = tab.cost(t, m)
            base = t ** (1 + 1 / m)
            a = 1
            while not t < m**a / math.factorial(a) and a < 12:
                a += 1
            a_ok = t < m**a / math.factorial(a)
            rows.append({"memory": m, "seq_len": t, "forward_ops": int(c),
                         "cost_per_step": c / t, "ratio": c / base,
                         "bound_upper": m * base, "holds_upper": bool(c <= m * base),
                         "bound_numeric": 4 * base, "holds_numeric": bool(c < 4 * base),
                         "a": a if a_ok else None,
                         "bound_linear": (a + 1) * t if a_ok else None,
                         "holds_linear": bool(c <= (a + 1) * t) if a_ok else None,
                         "t_log2_t": t * math.log2(t)})
    curves = pd.DataFrame(rows)
    curves["a"] = curves["a"].astype("Int64")
    # 3. numeric claim on every cell t < claim_max_len, m < claim_max_memory (closed form)
    tmax, mmax = int(p.claim_max_len) - 1, int(p.claim_max_memory) - 1
    theory_limits.check_arrays(smk, 6 * 8 * tmax, "theory.bounds.claim_max_len")
    worst, worst_at = 0.0, None
    upper_ok = True
    t = np.arange(1, tmax + 1, dtype=np.float64)
    for m in range(1, mmax + 1):
        c = closed_form_column(m, tmax).astype(np.float64)
        ratio = c / t ** (1 + 1 / m)
        i = int(np.argmax(ratio))
        if ratio[i] > worst:
            worst, worst_at = float(ratio[i]), (i + 1, m)
        upper_ok &= bool(np.all(ratio <= m))
    # 4. m = 1 regime, and the linear bound on every DP cell
    c1 = np.asarray(tab.C[1:, 1], dtype=float)
    tt = np.arange(1, T + 1)
    quad_ok = bool(np.all(c1 == tt * (tt + 1) / 2))
    lin_ok, lin_cells = True, 0
    for m in range(1, max(ms) + 1):
        col = np.asarray(tab.C[1:, m], dtype=float)
        for a in range(1, 12):
            lim = m**a / math.factorial(a)
            sel = tt < lim
            lin_cells += int(sel.sum())
            lin_ok &= bool(np.all(col[sel] <= (a + 1) * tt[sel]))
    # m ~ log2 t: C/(t log2 t) stays bounded (compare the upper half of the lengths with the
    # lower half: no growth)
    logm = [(t_, max(1, round(math.log2(t_)))) for t_ in lengths if t_ >= 16]
    lr = [(t_, tab.cost(t_, m_) / (t_ * math.log2(t_))) for t_, m_ in logm if m_ <= tab.M]
    half = len(lr) // 2
    lo_max = max((r for _, r in lr[:half]), default=float("nan"))
    hi_max = max((r for _, r in lr[half:]), default=float("nan"))
    claims = pd.DataFrame([
        {"claim": "closed form equals DP", "scope": f"t <= {T}, m <= {max(ms)}",
         "method": "DP table vs closed form", "value": mismatches,
         "holds": mismatches == 0, "detail": f"{mismatches} cells differ"},
        {"claim": "C <= m t^(1+1/m)", "scope": f"t <= {tmax}, m <= {mmax}",
         "method": "closed form, every cell", "value": None, "holds": upper_ok,
         "detail": "every cell" if upper_ok else "violated"},
        {"claim": "C < 4 t^(1+1/m)", "scope": f"t <= {tmax}, m <= {mmax}",
         "method": "closed form, every cell", "value": worst, "holds": worst < 4,
         "detail": f"max C/t^(1+1/m) = {worst:.4f} at t={worst_at[0]}, m={worst_at[1]}"},
        {"claim": "t < m^a/a! => C <= (a+1) t", "scope": f"t <= {T}, m <= {max(ms)}, a <= 11",
         "method": "DP table, every cell", "value": lin_cells, "holds": lin_ok,
         "detail": f"{lin_cells} (t, m, a) cells checked"},
        {"claim": "m = 1: C = t(t+1)/2 (Theta(t^2))", "scope": f"t <= {T}",
         "method": "DP table", "value": None, "holds": quad_ok,
         "detail": "every t" if quad_ok else "violated"},
        {"claim": "m = round(log2 t): C = O(t log t)", "scope": f"16 <= t <= {T}",
         "method": "DP table", "value": hi_max, "holds": bool(hi_max <= lo_max + 1e-12),
         "detail": f"max C/(t log2 t) = {lo_max:.3f} (lower half of t), {hi_max:.3f} "
                   "(upper half): bounded"},
    ])
    write_csv(curves, smk.output.curves)
    write_csv(claims, smk.output.claims)
    finish(smk, started, __file__, [smk.output.curves, smk.output.claims])


if __name__ == "__main__":
    with hold("shared", "theory_bounds"):  # never beside a measuring group (measure_lock.py)
        main(snakemake)  # noqa: F821
