"""The chain-priced DP of ``benchmarks/chain_dp.py`` (the analysis behind ``bench_floor.py``)
reduces to the paper's recursions on unit prices and agrees with a brute-force search."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from chain_dp import chain_dp  # noqa: E402

from membptt.planning.dp import c_hsm, c_ism  # noqa: E402

T, M = 40, 6


def _unit(T, M, lmax=1):
    fb = np.array([np.inf] + [float(L) for L in range(1, lmax + 1)])
    gf = np.arange(T + 1, dtype=float)
    ok = np.ones((lmax + 1, M + 1), dtype=bool)
    return fb, gf, ok


def test_unit_prices_give_bptt_hsm():
    fb, gf, ok = _unit(T, M)
    C = chain_dp(T, M, fb, gf, ok)
    for t in range(1, T + 1):
        for m in range(1, M + 1):
            assert C[t, m] == c_hsm(t, m), (t, m)
        assert math.isinf(C[t, 0])


def test_unit_prices_and_one_slot_internal_pushes_give_bptt_ism():
    fb, gf, ok = _unit(T, M)
    C = chain_dp(T, M, fb, gf, ok, size=np.array([0, 1]), hidden=False)
    for t in range(1, T + 1):
        for m in range(1, M + 1):
            assert C[t, m] == c_ism(t, m), (t, m)


def _brute(T, M, fb, gf, ok, size):
    """Every first action, recursively, without the table (small cases only)."""
    lmax = len(fb) - 1

    @functools.cache
    def C(t, m):
        if t == 0:
            return 0.0
        if m <= 0:
            return math.inf
        cands = [gf[y] + C(t - y, m - 1) + C(y, m) for y in range(1, t)]
        for L in range(1, min(lmax, t) + 1):
            if not ok[L][m]:
                continue
            for y in range(L, t + 1):
                right = 0.0 if y == t else C(t - y, m - size[L])
                cands.append(gf[y - L] + fb[L] + C(y - L, m) + right)
        return min(cands, default=math.inf)

    return C


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_prices_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, M, lmax = 14, 7, 4
    fb = np.concatenate([[np.inf], np.cumsum(rng.uniform(0.5, 3.0, lmax))])
    gf = np.concatenate([[0.0], 0.3 + np.cumsum(rng.uniform(0.2, 1.0, T))])
    ok = rng.uniform(size=(lmax + 1, M + 1)) < 0.8
    size = np.concatenate([[0], rng.integers(1, 3, lmax)])
    C = chain_dp(T, M, fb, gf, ok, size=size)
    brute = _brute(T, M, tuple(fb), tuple(gf), tuple(map(tuple, ok)), tuple(size))
    for t in range(T + 1):
        for m in range(M + 1):
            assert C[t, m] == pytest.approx(brute(t, m), rel=1e-12, abs=0), (t, m)


def test_longer_chains_never_cost_more_than_single_steps():
    """Chains of up to 8 steps (a fixed price per call plus a price per step, the single step
    priced as before) are more options: never worse, strictly better at the top."""
    T, M = 60, 4
    gf = np.arange(T + 1, dtype=float)
    ok1 = np.ones((2, M + 1), dtype=bool)
    C1 = chain_dp(T, M, [np.inf, 3.0], gf, ok1)
    fb8 = [np.inf] + [0.5 + 2.5 * L for L in range(1, 9)]
    C8 = chain_dp(T, M, fb8, gf, np.ones((9, M + 1), dtype=bool))
    assert (C8 <= C1 + 1e-9).all()
    assert C8[T, M] < C1[T, M]


def test_bad_shapes_are_refused():
    fb, gf, ok = _unit(5, 2)
    with pytest.raises(ValueError, match="gf must have"):
        chain_dp(6, 2, fb, gf, ok)
    with pytest.raises(ValueError, match="ok must have shape"):
        chain_dp(5, 3, fb, gf, ok)
