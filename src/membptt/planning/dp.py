"""Exact dynamic programs of Gruslys et al. (2016): BPTT-HSM, BPTT-ISM and BPTT-MSM.

One engine covers all three. A sub-problem is "backpropagate ``t`` steps starting from a stored
state, with ``m`` units of memory that include the start state's slot" (for ISM the start state
is free and ``m`` counts internal-state slots; the recursion is the same). Its first action is
one of

* **hidden push at y** (``1 <= y < t``): a run of ``y`` graph-free forwards, store ``h_y``; solve
  the right part (``t - y`` steps from ``h_y``) with ``m - 1``; drop ``h_y``; solve the left part
  (``y`` steps) with ``m``::

      Q1(t, m, y) = run(y) + C(t - y, m - 1) + C(y, m)

* **internal push at y** (``1 <= y < t``): a run of ``y - 1`` graph-free forwards, a forward with
  graph storing ``I_y`` (``beta`` units when ``y = 1``, since its input is the stored start
  state, else ``alpha``); solve the right part with ``m - size``; backward ``y``; drop ``I_y``;
  solve the left part (``y - 1`` steps) with ``m``::

      Q2(t, m, y) = run(y - 1) + g + C(y - 1, m) + C(t - y, m - size(y))

* **end** (``y = t``): a run of ``t - 1`` forwards and step ``t`` into the working core, which is
  backpropagated at once and costs no memory; then the left part (``t - 1`` steps) with ``m``.
  This is the paper's internal push at ``y = t`` ("consumed at once by the working core") and,
  for HSM, its ``C(t, 1) = t(t+1)/2`` / ``C(1, m) = 1`` boundary.

Boundaries: ``C(0, m) = 0``, ``C(t >= 1, m <= 0) = inf``. With unit costs (``run(k) = k``,
``g = 1``) the recursions are exactly the paper's BPTT-HSM, -ISM and -MSM recursions
(Gruslys et al. 2016, arXiv:1606.03401) and reproduce its values (the tests check them).

**Ties** are broken by one deterministic rule: least cost; then hidden push before internal
push before end; then smallest ``y``.

**Speed, exactly.** Scanning every ``y`` costs ``O(T^2 M)``. The compiled core
(``_dpcore.c``) bounds ``Q = A(y) + B(t - y)`` from below on an interval ``[a, b]`` by
``A(a) + B(t - b) + (b - a) min(dA, dB)``, with ``dA``, ``dB`` the least increments of the two
table columns over the ranges involved (suffix minima kept while the table is built; valid for
any column shape), and a left-first interval search prunes everything that cannot win, tie-break
included. The result equals the full scan (tests compare both); the numpy fallback (used when
the core is not built) is the plain full scan.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import limits
from .costs import UNIT_COSTS, CostModel

END, HIDDEN, INTERNAL = 0, 1, 2
KIND_NAMES = {END: "end", HIDDEN: "hidden", INTERNAL: "internal"}
INF = float("inf")


@dataclass(frozen=True)
class Family:
    """Which pushes a DP may use and their sizes in memory units."""

    hidden: bool
    internal: bool
    alpha: int = 1  # units of an internal push at y > 1
    beta: int = 1  # units of an internal push at y = 1
    name: str = ""

    def cap(self, t: int) -> int:
        """Memory beyond which more memory changes nothing for ``t`` steps (exact)."""
        unit = max(1 if self.hidden else 0, self.alpha if self.internal else 0)
        return 1 + unit * max(t - 1, 0)


def hsm_family() -> Family:
    return Family(hidden=True, internal=False, name="hsm")


def ism_family() -> Family:
    return Family(hidden=False, internal=True, alpha=1, beta=1, name="ism")


def msm_family(alpha: int, beta: int | None = None) -> Family:
    return Family(hidden=True, internal=True, alpha=int(alpha),
                  beta=int(alpha if beta is None else beta), name="msm")


class Table:
    """``C[t, m]`` (cost of the forward part), ``kind[t, m]`` and ``y[t, m]`` for
    ``0 <= t <= T``, ``0 <= m <= M``; lookups beyond ``M`` are clamped (exact, see Family.cap)."""

    def __init__(self, family: Family, costs: CostModel, C, kind, y, evals: int, work: int):
        self.family, self.costs = family, costs
        self.C, self.kind, self.y = C, kind, y
        self.T, self.M = C.shape[0] - 1, C.shape[1] - 1
        self.evals = evals
        #: work units spent building the table (:data:`membptt.planning.limits` ``max_dp_work``)
        self.work = work

    def covers(self, t: int, m: int) -> bool:
        return t <= self.T and (m <= self.M or self.M >= self.family.cap(self.T))

    def _m(self, m: int) -> int:
        return min(m, self.M)

    def cost(self, t: int, m: int) -> float:
        if t == 0:
            return 0.0
        if m <= 0:
            return INF
        return float(self.C[t, self._m(m)])

    def choice(self, t: int, m: int) -> tuple[int, int]:
        """(kind, y) of the first action for ``t`` steps with ``m`` units."""
        mm = self._m(m)
        return int(self.kind[t, mm]), int(self.y[t, mm])

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays (what the cache counts)."""
        return int(self.C.nbytes + self.kind.nbytes + self.y.nbytes)


def _run_vec(costs: CostModel, k):
    k = np.asarray(k, dtype=np.float64)
    return np.where(k > 0, costs.run_fixed + k * costs.run_per_step, 0.0)


CORE_VERSION = 3  # membptt_dp_version() of _dpcore.c this module calls


def _load_core():
    """The compiled DP core (built by ``pip install``), or None."""
    import ctypes
    import importlib.machinery
    from pathlib import Path

    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_dpcore{suffix}"
        if path.exists():
            lib = ctypes.CDLL(str(path))
            version = getattr(lib, "membptt_dp_version", None)
            if version is not None:
                version.restype = ctypes.c_long
            if version is None or version() != CORE_VERSION:
                raise ImportError(
                    f"the compiled DP core {path} is from another version of membptt (stale "
                    "build): rebuild it with `pip install -e .` in the repository")
            fn = lib.membptt_dp_solve
            fn.restype = ctypes.c_long
            ptr = np.ctypeslib.ndpointer
            fn.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_double, ctypes.c_double,
                           ctypes.c_double, ctypes.c_int, ctypes.c_int, ctypes.c_long,
                           ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_double,
                           ctypes.c_long, ptr(np.int64, flags="C"),
                           ptr(np.float64, flags="C"), ptr(np.int8, flags="C"),
                           ptr(np.int32, flags="C"), ptr(np.float64, flags="C")]
            chain = lib.membptt_chain_solve
            chain.restype = ctypes.c_long
            chain.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                              ctypes.c_int, ptr(np.float64, flags="C"),
                              ptr(np.float64, flags="C"), ptr(np.int8, flags="C"),
                              ptr(np.float64, flags="C"), ptr(np.int8, flags="C"),
                              ptr(np.int32, flags="C"), ptr(np.float64, flags="C"),
                              ptr(np.int32, flags="C")]
            return fn, chain
    return None, None


_CORE, CHAIN_CORE = _load_core()  # CHAIN_CORE: membptt.planning.chains.solve's compiled loop


def backend() -> str:
    """"c" when the compiled core is available, else "numpy" (exact too, much slower)."""
    return "c" if _CORE is not None else "numpy"


def solve(T: int, M: int, family: Family, costs: CostModel = UNIT_COSTS, *,
          reference: bool = False, use: str | None = None,
          max_bytes: int | None = None, max_work: int | None = None) -> Table:
    """Build the exact DP table for ``t <= T`` and ``m <= M`` (see the module docstring).

    ``reference=True`` disables the bound-based pruning (full scan of every ``y``); ``use``
    forces ``"c"`` or ``"numpy"``. ``M`` is first clamped to ``family.cap(T)`` (exact: more
    memory changes nothing); with ``max_bytes`` given, tables above it are refused with
    :class:`~membptt.planning.limits.PlanTooLarge` before anything is allocated (this low-level
    call has no limit by default; :func:`table` and :func:`membptt.plan` apply
    :data:`membptt.planning.limits.DEFAULT_MAX_TABLE_BYTES`). With ``max_work`` given, a
    table whose construction needs more than that many work units (Q evaluations, search
    intervals, cells, suffix-minimum updates; the running time is about proportional to it) is
    abandoned at that point with :class:`~membptt.planning.limits.PlanTooLarge`
    (deterministic: the count does not depend on the machine).
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T must be an integer >= 0, got {T!r}")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)):
        raise ValueError(f"M must be an integer number of memory units, got {M!r}")
    for name in ("alpha", "beta"):
        v = getattr(family, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"Family.{name} must be an integer >= 1, got {v!r}")
    T = int(T)
    M = max(1, min(int(M), family.cap(T)))  # Python ints: no overflow before the clamp
    limits.check_table(T, M, limits.max_table_bytes(max_bytes) if max_bytes is not None
                       else limits.table_bytes(T, M))
    use = use or backend()
    if use == "c" and _CORE is None:
        raise RuntimeError("the compiled DP core is not built (reinstall membptt with a C compiler)")
    # Sizes above M + 1 units never fit in a cell m <= M, exactly like M + 1 itself: clamping
    # them keeps every argument of the compiled core (C longs) in range, whatever alpha is.
    alpha, beta = min(int(family.alpha), M + 1), min(int(family.beta), M + 1)
    cap_unit = max(1 if family.hidden else 0, alpha if family.internal else 0)
    if use == "c":
        # integer costs keep every sum exact: prune ties exactly; otherwise keep a margin
        integer_costs = all(float(v).is_integer() and abs(v) < 2**40
                            for v in (costs.run_fixed, costs.run_per_step, costs.forward_graph))
        Cm = np.empty((M + 1, T + 1))
        Km = np.empty((M + 1, T + 1), dtype=np.int8)
        Ym = np.empty((M + 1, T + 1), dtype=np.int32)
        smin = np.empty((M + 1, T + 1))
        counts = np.zeros(2, dtype=np.int64)
        status = _CORE(T, M, float(costs.run_fixed), float(costs.run_per_step),
                       float(costs.forward_graph), int(family.hidden), int(family.internal),
                       alpha, beta, cap_unit, int(reference),
                       0.0 if integer_costs else 1e-9, int(max_work or 0), counts,
                       Cm, Km, Ym, smin)
        if status != 0:
            del Cm, Km, Ym, smin
            limits.refuse_work(T, M, int(counts[1]), max_work, family.name)
        return Table(family, costs, Cm.T, Km.T, Ym.T, int(counts[0]), int(counts[1]))
    return _solve_numpy(T, M, family, costs, max_work)


def _solve_numpy(T: int, M: int, family: Family, costs: CostModel,
                 max_work: int | None = None) -> Table:
    """Full scan over y, vectorised over m with array slices (exact; O(T^2 M)). Work counted
    as Q evaluations + cells (no suffix minima here); refused past ``max_work``."""
    C = np.full((T + 1, M + 1), INF)
    C[0, :] = 0.0
    kind = np.zeros((T + 1, M + 1), dtype=np.int8)
    ych = np.zeros((T + 1, M + 1), dtype=np.int32)
    g = float(costs.forward_graph)
    a, b = family.alpha, family.beta
    evals = 0
    if T >= 1:
        C[1, 1:] = g
        ych[1, 1:] = 1
    for t in range(2, T + 1):
        # end (y = t)
        bestc = _run_vec(costs, t - 1) + g + C[t - 1, 1:]
        ck = np.full(M, END, dtype=np.int8)
        cy = np.full(M, t, dtype=np.int32)
        cands = []
        ys = np.arange(1, t)
        if family.hidden and M >= 2:
            # Q1[y, m] = run(y) + C[y, m] + C[t - y, m - 1], m = 2..M
            q = _run_vec(costs, ys)[:, None] + C[1:t, 2:] + C[t - 1 : 0 : -1, 1:M]
            cands.append((HIDDEN, 2, q, 1))
        if family.internal and M - b >= 1:
            q = g + C[t - 1, 1 : M - b + 1][None, :]
            cands.append((INTERNAL, 1 + b, q, 1))
        if family.internal and t >= 3 and M - a >= 1:
            # Q2[y, m] = run(y-1) + g + C[y-1, m] + C[t-y, m-a], y = 2..t-1, m = a+1..M
            q = (_run_vec(costs, ys[1:] - 1)[:, None] + g + C[1 : t - 1, a + 1 :]
                 + C[t - 2 : 0 : -1, 1 : M - a + 1])
            cands.append((INTERNAL, 1 + a, q, 2))
        best = np.full(M, INF)
        for knd, m0, q, ylo in cands:
            evals += q.size
            j = np.argmin(q, axis=0)
            qv = q[j, np.arange(q.shape[1])]
            sl = slice(m0 - 1, M)
            better = qv < best[sl]
            best[sl] = np.where(better, qv, best[sl])
            ck[sl] = np.where(better, knd, ck[sl])
            cy[sl] = np.where(better, ylo + j, cy[sl])
        take_end = bestc < best
        C[t, 1:] = np.where(take_end, bestc, best)
        kind[t, 1:] = np.where(take_end, END, ck)
        ych[t, 1:] = np.where(take_end, t, cy)
        if max_work and evals + t * M > max_work:
            limits.refuse_work(T, M, evals + t * M, max_work, family.name)
    return Table(family, costs, C, kind, ych, evals, evals + T * M)


def solve_reference(T: int, M: int, family: Family, costs: CostModel = UNIT_COSTS) -> Table:
    """The same DP with a full scan over ``y`` in every cell (no pruning)."""
    return solve(T, M, family, costs, reference=True)


# -- memoised tables -------------------------------------------------------------------------

CACHE_MAX_BYTES = 256 * 2**20
"""Bytes of DP tables kept between plans (least recently used first out). A table larger than
this is returned but not kept. Change it by assignment (``dp.CACHE_MAX_BYTES = ...``)."""

_CACHE: OrderedDict = OrderedDict()  # (family, time key) -> Table, least recently used first
_LOCK = threading.Lock()


def _cache_put(key, tab: Table) -> None:
    _CACHE.pop(key, None)
    if tab.nbytes > CACHE_MAX_BYTES:
        return
    _CACHE[key] = tab
    while sum(v.nbytes for v in _CACHE.values()) > CACHE_MAX_BYTES:
        _CACHE.popitem(last=False)


def cache_bytes() -> int:
    """Bytes held by the table cache now (at most :data:`CACHE_MAX_BYTES`)."""
    with _LOCK:
        return sum(v.nbytes for v in _CACHE.values())


def table(t: int, m: int, family: Family, costs: CostModel = UNIT_COSTS, *,
          max_bytes: int | None = None, max_work: int | None = None) -> Table:
    """A table covering ``(t, m)``, shared between plans of the same family and time costs.

    A cached table that does not cover ``(t, m)`` is grown to cover both, unless the grown
    table would exceed ``max_bytes`` or ``max_work``; then only ``(t, m)`` is solved (a growth
    refused for work has cost up to ``max_work`` units first; a fresh process has no cached
    table, so ``membptt plan`` never pays that). Refuses (``PlanTooLarge``) a table for ``(t, m)`` itself above ``max_bytes`` or ``max_work`` (see
    :func:`solve`; ``None``: the defaults of :mod:`membptt.planning.limits`).
    """
    key = (family, costs.time_key())
    limit = limits.max_table_bytes(max_bytes)
    work = limits.max_dp_work(max_work)
    with _LOCK:
        tab = _CACHE.get(key)
        if tab is not None and tab.covers(t, m):
            _CACHE.move_to_end(key)
            return tab
        T, M = t, min(m, family.cap(t))
        if tab is not None:
            T2 = max(t, tab.T)
            M2 = max(min(m, family.cap(T2)), tab.M)
            if limits.table_bytes(T2, M2) <= limit:
                try:
                    tab = solve(T2, M2, family, costs, max_bytes=limit, max_work=work)
                except limits.PlanTooLarge:
                    tab = None  # the grown table is too much work: solve (t, m) alone
                if tab is not None:
                    _cache_put(key, tab)
                    return tab
        tab = solve(T, M, family, costs, max_bytes=limit, max_work=work)
        _cache_put(key, tab)
        return tab


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def cost(t: int, m: int, family: Family, costs: CostModel = UNIT_COSTS) -> float:
    """The optimal forward cost ``C(t, m)`` (``inf`` when infeasible)."""
    if t == 0:
        return 0.0
    if m <= 0:
        return INF
    return table(t, m, family, costs).cost(t, m)


def c_hsm(t: int, m: int) -> int:
    return int(cost(t, m, hsm_family()))


def c_ism(t: int, m: int) -> float:
    return cost(t, m, ism_family())


def c_msm(t: int, m: int, alpha: int, beta: int | None = None) -> float:
    return cost(t, m, msm_family(alpha, beta))


# -- closed forms ------------------------------------------------------------------------------

def _binom(n: int, k: int) -> int:
    from math import comb

    return comb(n, k) if 0 <= k <= n else 0


def c_hsm_closed(t: int, m: int) -> int:
    """The closed form of C_HSM: with r = min{r >= 0 : binom(m + r, m) >= t},
    C = (r+1) t - binom(m+r, m+1) (Griewank's binomial checkpointing count plus t rebuilds)."""
    if t < 0 or m < 1:
        raise ValueError(f"closed form needs t >= 0 and m >= 1, got t={t}, m={m}")
    if t == 0:
        return 0
    r = 0
    while _binom(m + r, m) < t:
        r += 1
    return (r + 1) * t - _binom(m + r, m + 1)


def c_ism_closed(t: int, m: int) -> int:
    """BPTT-ISM's closed form: C_ISM(t, m) = C_HSM(t + 1, m) - (t + 1)."""
    if t == 0:
        return 0
    return c_hsm_closed(t + 1, m) - (t + 1)
