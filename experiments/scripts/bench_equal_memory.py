"""One measured point at torch-checkpoint's measured peak: `membptt bench --memory <bytes>B`.

The byte budget handed to the planner is for the states a plan *stores*; a plan's measured peak
adds a working set (the parameter gradients, the working core being backpropagated and its
backward temporaries: docs/results-schema.md). So the budget is torch-checkpoint's measured
``peak_bytes`` minus ``grad_bytes`` twice (the gradients, and autograd's buffer of the
parameter gradients summed over a chain of stored steps that the executor backpropagates in
one call: docs/executor.md) and minus two internal states (the core and the backward's
temporaries, sizes from another point of the same workload that probed them). The table of
methods at equal memory then compares measured peaks, whatever this estimate gives.
"""

import subprocess
import sys

import pandas as pd
from pipeline_common import start


def main(smk):
    start(smk)
    ckpt = pd.read_csv(smk.input.ckpt).iloc[0]
    sizes = pd.read_csv(smk.input.sizes).iloc[0]
    if ckpt.status != "ok" or pd.isna(ckpt.peak_bytes):
        raise SystemExit(f"torch-checkpoint point has no measured peak: {ckpt.status} "
                         f"{ckpt.message}")
    internal = float(sizes.internal_bytes) if pd.notna(sizes.internal_bytes) else 0.0
    grads = float(ckpt.grad_bytes) if pd.notna(ckpt.grad_bytes) else 0.0
    budget = int(float(ckpt.peak_bytes) - 2 * grads - 2 * internal)
    print(f"torch-checkpoint peak {ckpt.peak_bytes} B, grads {grads:.0f} B (twice: .grad and a "
          f"chain's sum), internal state {internal:.0f} B -> plan budget {budget} B", flush=True)
    if budget <= 0:
        raise SystemExit(f"derived budget {budget} B is not positive")
    cmd = [smk.params.membptt, "bench", "--method", smk.wildcards.method,
           "--seq-len", smk.wildcards.T, "--memory", f"{budget}B", *smk.params.args,
           "--out", smk.output.csv]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr, check=False).returncode
    if rc:
        raise SystemExit(rc)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
