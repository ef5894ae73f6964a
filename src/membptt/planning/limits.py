"""Size limits of planning: refuse what would not fit in memory or take too long.

Three things grow with the problem and are bounded here:

* the **DP tables** of HSM / ISM / MSM (:mod:`membptt.planning.dp`): ``(T + 1) x (M + 1)``
  cells of :data:`TABLE_CELL_BYTES` bytes while they are built, where ``M`` is the budget in
  units clamped to ``Family.cap(T)`` (more memory than the cap changes nothing, so a generous
  budget never costs more than the cap). Limit: ``max_table_bytes``, default
  :data:`DEFAULT_MAX_TABLE_BYTES` (256 MiB);
* the **work** of building those tables: the compiled core counts Q evaluations, search
  intervals, cells and suffix-minimum updates (its running time is about proportional to that
  count, a few nanoseconds per unit) and abandons a table past
  ``max_dp_work``, default
  :data:`DEFAULT_MAX_DP_WORK`. The count is deterministic (it does not depend on the machine's
  speed), so the same request is answered or refused the same way everywhere. Tables with long
  ``T`` and small ``M`` just under the byte limit need the most work per cell;
* the **op list** of a plan (every strategy): a plan holds at least ``2 T`` ops (one forward and
  one backward per step) and each op costs about :data:`OP_BYTES` bytes of Python objects plus
  the simulator's pass over it. Limit: ``max_ops``, default :data:`DEFAULT_MAX_OPS` (2^20).

With the three defaults, ``membptt plan`` answers or refuses any ``seq_len <= 10^6`` within
10 s and well under 2 GiB of resident memory (measured with ``/usr/bin/time``;
``benchmarks/bench_plan_limits.py``, ``docs/reliability.md``). The limits are keyword arguments
of :func:`membptt.plan` (``max_table_bytes=``, ``max_ops=``, ``max_dp_work=``; ``None`` means
the default) and options of ``membptt plan`` (``--max-table-mib``, ``--max-ops``,
``--max-dp-work``). A refusal raises :class:`PlanTooLarge`
(a ``ValueError``) that says what the plan would need and how to get it.

Caveat: the op count of a DP plan is known before emitting it only under unit time costs (it is
then the table's ``C(T, m)``); under measured costs the emitter counts as it goes and stops at
the limit, so the refusal costs at most ``max_ops`` ops of memory.
"""

from __future__ import annotations

from .errors import PlanTooLarge

DEFAULT_MAX_TABLE_BYTES = 256 * 2**20
DEFAULT_MAX_OPS = 2**20
DEFAULT_MAX_DP_WORK = 4 * 10**8
TABLE_CELL_BYTES = 21  # cost (float64) + kind (int8) + y (int32) + suffix minima (float64)
OP_BYTES = 80  # one op object and its list slot, measured on CPython 3.11 (approximate)
C_LONG_MAX = 2**63 - 1  # the compiled core's integer arguments are C longs
MAX_STEPS = 2**31 - 1  # split points are stored as int32


def _mib(n: float) -> str:
    if n < 2**30:
        return f"{n / 2**20:,.1f} MiB"
    return f"{n / 2**30:,.1f} GiB" if n < 2**70 else f"{n / 2**30:.3g} GiB"


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"{n:.3g}"


def _check_limit(name: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (or None for the default "
                         f"{default}), got {value!r}")
    return value


def max_table_bytes(value=None) -> int:
    """The table limit to use: ``value`` checked, or the default."""
    return _check_limit("max_table_bytes", value, DEFAULT_MAX_TABLE_BYTES)


def max_ops(value=None) -> int:
    """The op limit to use: ``value`` checked, or the default."""
    return _check_limit("max_ops", value, DEFAULT_MAX_OPS)


def max_dp_work(value=None) -> int:
    """The DP work limit to use: ``value`` checked, or the default."""
    return _check_limit("max_dp_work", value, DEFAULT_MAX_DP_WORK)


def refuse_work(T: int, M: int, done: int, limit: int, family: str = "") -> None:
    """Raise :class:`PlanTooLarge` for a DP abandoned after ``done`` work units."""
    what = f"the {family} DP" if family else "the DP"
    raise PlanTooLarge(
        f"{what} for seq_len={T} and {_count(M)} memory units needs more than {limit:,} work "
        f"units (Q evaluations, search intervals and cells; stopped at {done:,}): give a "
        "smaller budget or a shorter sequence, plan on blocks of several steps (planner='blocks'), or "
        "raise the limit (max_dp_work=..., membptt plan --max-dp-work ...)", limit="work")


def table_bytes(T: int, M: int) -> int:
    """Bytes the DP tables for ``t <= T``, ``m <= M`` take while they are built."""
    return (T + 1) * (M + 1) * TABLE_CELL_BYTES


def check_table(T: int, M: int, limit: int, what: str = "the DP tables") -> None:
    """Raise :class:`PlanTooLarge` when the tables for ``(T, M)`` would exceed ``limit`` bytes."""
    if T > MAX_STEPS:
        raise PlanTooLarge(f"{what} cannot hold seq_len={T}: at most {MAX_STEPS} steps",
                           limit="table")
    need = table_bytes(T, M)
    if need <= limit:
        return
    fit = limit // ((T + 1) * TABLE_CELL_BYTES) - 1
    how = (f"a budget of at most {fit} units fits (smaller budget, fewer units)" if fit >= 1
           else f"no budget fits for seq_len={T} (shorter sequence)")
    raise PlanTooLarge(
        f"{what} for seq_len={T} and {_count(M)} memory units would need {_mib(need)}, above the "
        f"limit of {_mib(limit)}: {how}, or raise the limit (max_table_bytes=..., "
        f"membptt plan --max-table-mib ...) if the machine has the memory", limit="table")


def check_ops(n: int, limit: int, *, strategy: str, seq_len: int, exact: bool = True) -> None:
    """Raise :class:`PlanTooLarge` when a plan of ``n`` ops (at least ``n`` if not ``exact``)
    would exceed ``limit`` ops."""
    if n <= limit:
        return
    count = _count(n) if exact else f"at least {_count(n)}"
    raise PlanTooLarge(
        f"the {strategy} plan for seq_len={seq_len} would hold {count} ops (about "
        f"{_mib(n * OP_BYTES)} and as many simulator steps), above the limit of {limit:,} "
        "ops: give a larger memory budget or a strategy that recomputes less, a shorter "
        "sequence, or "
        "raise the limit (max_ops=..., membptt plan --max-ops ...)", limit="ops")
