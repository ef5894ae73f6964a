"""The theory scripts' DP tables go through the planner's size limits (membptt.planning.limits).

``dp.solve`` (the low-level call the theory scripts use to get whole tables) has no limit of its
own: ``theory.lengths.max: 1000000000`` asked it for about 380 GiB. Here every table is checked
before it is allocated (``limits.check_table``, the planner's check) and built with a work limit
(``dp.solve(..., max_bytes=, max_work=)``, the planner's ``max_dp_work``), at the limits of the
config:

* ``theory.max_table_mib`` (default 4096 MiB): the largest table; the paper's configuration
  needs 1002 MiB (the MSM curves, T = 10^4, M = 5000 units) and 443 MiB (Fig. 7, beta = 10).
  Never more than half of this machine's memory, whatever the config says;
* ``theory.max_dp_work`` (default 10^10 units, about 1-2 minutes): the paper's largest table
  needs 1.5 x 10^9 units (the MSM curves, 6 s on the 2-core development machine).

A refusal ends the job with one line naming the table, what it would need, and the config keys.
"""

from __future__ import annotations

import os

from membptt.planning import dp
from membptt.planning.limits import (
    PlanTooLarge,
    check_table,
    max_dp_work,
    max_table_bytes,
    table_bytes,
)

DEFAULT_MAX_TABLE_MIB = 4096
DEFAULT_MAX_DP_WORK = 10**10


def machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def limits_of(config: dict | None) -> tuple[int, int, str]:
    """(table bytes, DP work units, a note saying where they come from) for ``config``."""
    th = (config or {}).get("theory", {})
    mib = th.get("max_table_mib", DEFAULT_MAX_TABLE_MIB)
    work = th.get("max_dp_work", DEFAULT_MAX_DP_WORK)
    nbytes = int(float(mib) * 2**20)
    note = f"theory.max_table_mib = {mib:g} MiB"
    have = machine_memory()
    if have is not None and nbytes > have // 2:
        nbytes = have // 2
        note += f", capped at half of this machine's {have / 2**30:.1f} GiB"
    return max_table_bytes(max(1, nbytes)), max_dp_work(int(work)), note


def solve(smk, T: int, M: int, family: dp.Family, what: str) -> dp.Table:
    """``dp.solve(T, M, family)`` within the config's limits; a refusal exits the job with one
    line (``SystemExit``) naming ``what``, the size and the config keys."""
    config = getattr(smk, "config", None) if smk is not None else None
    nbytes, work, note = limits_of(config)
    M_eff = max(1, min(int(M), family.cap(int(T))))
    try:
        check_table(int(T), M_eff, nbytes, what=f"the {family.name} DP table of {what}")
        return dp.solve(int(T), int(M), family, max_bytes=nbytes, max_work=work)
    except PlanTooLarge as e:
        raise SystemExit(
            f"theory: {e} [{what}: limits {note}, theory.max_dp_work = {work:,} units; the "
            f"table needs {table_bytes(int(T), M_eff) / 2**20:,.0f} MiB: shorten the lengths, "
            "lower the budgets, or raise those config keys if the machine has the memory]"
        ) from None


def check_arrays(smk, nbytes: int, what: str) -> None:
    """Exit the job with one line when arrays of ``nbytes`` (a closed form over every length)
    would exceed the table limit: the same limit as the DP tables."""
    config = getattr(smk, "config", None) if smk is not None else None
    limit, _, note = limits_of(config)
    if nbytes > limit:
        raise SystemExit(f"theory: {what} needs arrays of {nbytes / 2**20:,.0f} MiB, above the "
                         f"limit ({note}): give a smaller value")
