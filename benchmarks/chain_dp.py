"""The optimal cost of checkpointing plans whose with-graph work is fused chains priced by length.

An analysis for ``bench_floor.py`` (issue 9), not a planner: it gives the least time of a plan
of the paper's kind (hidden-state checkpoints, and kept graphs as BPTT-MSM's internal states)
when a with-graph *chain* of ``L`` consecutive steps is one fused call whose time ``fb[L]``
(forward with graph plus backward) and size were measured for every ``L``, and a graph-free run
of ``y`` steps costs ``gf[y]``. It is the recursion of :mod:`membptt.planning.dp` with chains in
place of single steps. A sub-problem is "backpropagate ``t`` steps from a stored state with
``m`` slots of memory that include the start state's slot"; its first action is

* **hidden push at y** (``1 <= y < t``, if ``hidden``): run ``y`` steps graph-free, store the
  state, solve the right part with ``m - 1``, then the left part with ``m``::

      Q1 = gf[y] + C(t - y, m - 1) + C(y, m)

* **chain of L ending at y** (``L <= y <= t``, ``ok[L, m]``): run ``y - L`` steps graph-free,
  run the chain with graph and keep its graph (``size[L]`` slots) while the right part is
  solved with ``m - size[L]``, backpropagate it, then solve the left part (``y - L`` steps)::

      Q2 = gf[y - L] + fb[L] + C(y - L, m) + C(t - y, m - size[L])

  With ``y = t`` the right part is empty and the chain is backpropagated at once (the end).
  ``ok[L, m]`` says whether the chain's whole peak (its graph plus its backward's temporaries)
  fits beside the states stored when ``m`` slots are left; ``size=None`` allows only the end.

Boundaries as in :mod:`membptt.planning.dp`: ``C(0, m) = 0``, ``C(t >= 1, m <= 0) = inf``. With
unit prices (``gf[y] = y``, ``fb[1] = 1``, chains of one step) the hidden pushes and the end give
BPTT-HSM's ``C`` exactly, and internal pushes of one slot without hidden pushes give BPTT-ISM's
(``tests/test_chain_dp.py``). Cost ``O(T^2 M Lmax)`` as numpy vectors of length ``T``: seconds
at ``T = 1000``, a few hundred slots and chains of up to about 20 steps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chain_dp"]


def chain_dp(T: int, M: int, fb, gf, ok, size=None, hidden: bool = True) -> np.ndarray:
    """The table ``C[t, m]`` (``0 <= t <= T``, ``0 <= m <= M``) of least costs.

    ``fb``: cost of a with-graph chain of ``L`` steps at index ``L`` (``fb[0]`` unused; ``inf``
    for a length that is not possible), ``len(fb) - 1`` is the longest chain considered;
    ``gf``: cost of a graph-free run of ``y`` steps at index ``y`` for ``0 <= y <= T``
    (``gf[0] = 0``); ``ok``: boolean ``(len(fb), M + 1)``, whether a chain of ``L`` fits with
    ``m`` slots left; ``size``: slots a kept chain of ``L`` occupies (``None``: chains are only
    run at the end of a sub-problem, as BPTT-HSM's last step); ``hidden``: allow hidden pushes.
    """
    fb = np.asarray(fb, dtype=float)
    gf = np.asarray(gf, dtype=float)
    ok = np.asarray(ok, dtype=bool)
    lmax = len(fb) - 1
    if gf.shape != (T + 1,) or gf[0] != 0:
        raise ValueError(f"gf must have T + 1 = {T + 1} entries with gf[0] = 0")
    if ok.shape != (lmax + 1, M + 1):
        raise ValueError(f"ok must have shape {(lmax + 1, M + 1)}, got {ok.shape}")
    if size is not None:
        size = np.asarray(size, dtype=int)
        if size.shape != (lmax + 1,) or (size[1:] < 1).any():
            raise ValueError("size must give at least one slot for every chain length")
    C = np.full((T + 1, M + 1), np.inf)
    C[0, :] = 0.0
    for m in range(1, M + 1):
        col = C[:, m]
        lens = [L for L in range(1, lmax + 1) if ok[L, m] and np.isfinite(fb[L])]
        for t in range(1, T + 1):
            best = np.inf
            if hidden and t >= 2:
                y = np.arange(1, t)
                best = (gf[y] + C[t - y, m - 1] + col[y]).min()
            for L in lens:
                if L > t:
                    break
                # the end (y = t): chain backpropagated at once
                best = min(best, gf[t - L] + fb[L] + col[t - L])
                if size is not None and t > L and m - size[L] >= 1:
                    y = np.arange(L, t)  # the chain ends at y < t and is kept
                    q = gf[y - L] + fb[L] + col[y - L] + C[t - y, m - size[L]]
                    best = min(best, q.min())
            col[t] = best
    return C
