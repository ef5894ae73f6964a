"""The exact DPs against PAPER.md's tables, closed forms, brute force and the plain scan."""

import numpy as np
import pytest
from bruteforce import optimal_cost

from membptt.planning import CostModel, dp


def test_small_tables_hsm_ism(published):
    for name, fn in (("hsm", dp.c_hsm), ("ism", dp.c_ism)):
        tab = published["small_tables"][name]
        for t, row in enumerate(tab["rows"], start=1):
            assert [fn(t, m) for m in tab["m"]] == row, (name, t)


def test_small_tables_msm(published):
    tab = published["small_tables"]["msm_alpha2"]
    for t, row in enumerate(tab["rows"], start=1):
        assert [dp.c_msm(t, m, 2) for m in tab["m"]] == row, t
    tab = published["small_tables"]["msm_alpha3_beta2"]
    for t, row in zip(tab["t"], tab["rows"]):
        assert [dp.c_msm(t, m, 3, 2) for m in tab["m"]] == row, t


def test_large_values(published):
    lv = published["large_values"]
    assert [dp.c_hsm(1000, m) for m in lv["hsm_t1000"]["m"]] == lv["hsm_t1000"]["C"]
    assert dp.c_ism(1000, 50) == lv["ism_t1000_m50"]
    assert [dp.c_msm(1000, m, 5) for m in lv["msm_alpha5_t1000"]["m"]] == lv["msm_alpha5_t1000"]["C"]


@pytest.mark.parametrize("name", ["hsm", "ism"])
def test_cost_per_step_tables(published, name):
    cps = published["cost_per_step"]
    fam = dp.hsm_family() if name == "hsm" else dp.ism_family()
    lengths = cps["lengths"]
    budgets = [int(m) for m in cps[name]]
    tab = dp.table(max(lengths), max(budgets), fam)
    for m in budgets:
        got = [round(tab.cost(t, m) / t, 3) for t in lengths]
        assert got == pytest.approx(cps[name][str(m)], abs=1e-9), (name, m)


def test_msm_cost_per_step(published):
    ref = published["cost_per_step"]["msm_alpha5"]["50"]
    got = [round(dp.c_msm(t, 50, 5) / t, 3) for t in ref["lengths"]]
    assert got == pytest.approx(ref["values"], abs=1e-9)


def test_headline(published):
    h = published["headline"]
    c = dp.c_ism(h["seq_len"], h["ism_slots"])
    assert c == h["forward_ops"]
    ratio = (c / h["seq_len"] + 2) / 3
    assert round(ratio, 3) == h["time_ratio"]
    assert 1 - h["ism_slots"] / h["seq_len"] == pytest.approx(h["memory_saved_fraction"])


def test_boundary_conditions():
    for t in range(0, 40):
        for m in range(1, 12):
            h = dp.c_hsm(t, m)
            if t >= 1:
                assert dp.c_hsm(t, 1) == t * (t + 1) // 2
                assert dp.c_ism(t, 1) == t * (t + 1) // 2
                assert dp.c_msm(t, 1, 3) == t * (t + 1) // 2
            if t >= 1 and m >= t - 1:
                assert h == 2 * t - 1
            if m >= t:
                assert dp.c_ism(t, m) == t
            if m >= 3 * t:
                assert dp.c_msm(t, m, 3) == t
    assert dp.c_hsm(0, 5) == 0 and dp.c_hsm(1, 3) == 1
    assert dp.c_ism(3, 0) == float("inf") and dp.c_msm(3, 0, 2) == float("inf")


def test_closed_forms_equal_dp():
    T, M = 300, 40
    h = dp.solve(T, M, dp.hsm_family())
    i = dp.solve(T, M, dp.ism_family())
    for t in range(0, T + 1):
        for m in range(1, M + 1):
            assert h.cost(t, m) == dp.c_hsm_closed(t, m), (t, m)
            assert i.cost(t, m) == dp.c_ism_closed(t, m), (t, m)


def test_msm_never_worse_than_hsm_or_ism():
    T, M, a = 150, 60, 4
    msm = dp.solve(T, M, dp.msm_family(a))
    hsm = dp.solve(T, M, dp.hsm_family())
    ism = dp.solve(T, M // a, dp.ism_family())
    for t in range(1, T + 1):
        for m in range(1, M + 1):
            assert msm.cost(t, m) <= hsm.cost(t, m)
            if m // a >= 1:
                assert msm.cost(t, m) <= ism.cost(t, m // a)


def test_hsm_optimal_against_exhaustive_search():
    for t in range(1, 8):
        for m in range(1, 5):
            assert optimal_cost(t, m) == dp.c_hsm(t, m), (t, m)


def test_ism_optimal_against_exhaustive_search():
    # The paper's ISM budget m counts the working core: m - 1 stored internal states + core.
    for t in range(1, 7):
        for m in range(1, 5):
            assert optimal_cost(t, m - 1, hidden=False, internal=True,
                                count_initial=False) == dp.c_ism(t, m), (t, m)


@pytest.mark.parametrize("alpha,beta", [(2, None), (3, 2), (2, 1)])
def test_msm_optimal_against_exhaustive_search(alpha, beta):
    for t in range(1, 6):
        for m in range(1, 2 * alpha + 3):
            assert optimal_cost(t, m, hidden=True, internal=True, alpha=alpha,
                                beta=beta) == dp.c_msm(t, m, alpha, beta), (t, m)


COSTS = [CostModel(), CostModel(run_fixed=0.3, run_per_step=0.4),
         CostModel(run_fixed=2.0, run_per_step=0.5, forward_graph=1.7),
         CostModel(run_fixed=0.0, run_per_step=0.37, forward_graph=1.3)]
FAMILIES = [dp.hsm_family(), dp.ism_family(), dp.msm_family(5), dp.msm_family(3, 2),
            dp.msm_family(4, 1)]


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f"{f.name}-{f.alpha}-{f.beta}")
@pytest.mark.parametrize("costs", COSTS, ids=range(len(COSTS)))
def test_pruned_search_equals_full_scan(fam, costs):
    """The compiled core's pruning gives exactly the full scan: values, kinds and splits."""
    if dp.backend() != "c":
        pytest.skip("compares the compiled core's pruned search with its full scan; without "
                    "the core both calls would run the same numpy scan")
    T, M = 120, 90
    fast = dp.solve(T, M, fam, costs)
    ref = dp.solve(T, M, fam, costs, reference=True)
    assert np.array_equal(fast.C, ref.C)
    assert np.array_equal(fast.kind, ref.kind)
    assert np.array_equal(fast.y, ref.y)
    if dp.backend() == "c":
        nump = dp.solve(T, M, fam, costs, use="numpy")
        assert np.array_equal(fast.C, nump.C)
        assert np.array_equal(fast.kind, nump.kind)
        assert np.array_equal(fast.y, nump.y)


def test_table_memoised_and_clamped():
    dp.clear_cache()
    fam = dp.msm_family(5)
    a = dp.table(100, 30, fam)
    assert dp.table(50, 20, fam) is a
    big = dp.table(100, 10**6, fam)  # clamped at cap(T): more memory changes nothing
    assert big.M == fam.cap(100)
    assert big.cost(100, 10**6) == 100


def test_hsm_bounds():
    for m in (2, 3, 5, 10):
        for t in (10, 100, 1000):
            c = dp.c_hsm(t, m)
            assert c <= m * t ** (1 + 1 / m)
            assert c < 4 * t ** (1 + 1 / m)
