"""Optimal BPTT-HSM policies for small t and m (the paper's Fig. 3): every operation of the plan.

Writes the operations (one row per op, in execution order) and a summary per plan: forward and
backward counts, peak memory from the simulator, the DP cost, and the trace in the paper's style.
"""

import pandas as pd
from measure_lock import hold
from pipeline_common import finish, start, write_csv

import membptt
from membptt.planning import dp
from membptt.planning.ops import Backward, Forward, paper_trace


def main(smk):
    started = start(smk)
    m = int(smk.params.memory)
    ops_rows, summary = [], []
    for t in smk.params.lengths:
        plan = membptt.plan("hsm", int(t), m)
        sim = membptt.simulate(plan)
        for i, op in enumerate(plan.ops):
            if isinstance(op, Forward):
                kind, keep = "forward", op.keep or "none"
            elif isinstance(op, Backward):
                kind, keep = "backward", ""
            else:
                kind, keep = "drop", op.kind
            ops_rows.append({"seq_len": t, "memory": m, "index": i, "op": str(op),
                             "kind": kind, "step": op.step, "keep": keep})
        summary.append({"strategy": "hsm", "seq_len": t, "memory": m,
                        "forward_ops": plan.forward_ops, "backward_ops": plan.backward_ops,
                        "simulated_forward_ops": sim.forward_ops,
                        "peak_memory": plan.peak_memory, "dp_cost": dp.c_hsm(int(t), m),
                        "trace": paper_trace(plan.ops)})
    write_csv(pd.DataFrame(ops_rows), smk.output.ops)
    write_csv(pd.DataFrame(summary), smk.output.summary)
    finish(smk, started, __file__, [smk.output.ops, smk.output.summary])


if __name__ == "__main__":
    with hold("shared", "theory_fig3"):  # never beside a measuring group (measure_lock.py)
        main(snakemake)  # noqa: F821
