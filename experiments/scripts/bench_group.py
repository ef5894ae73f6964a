"""One comparison group: `membptt bench` with every method of the group in one process.

The methods are timed interleaved, round by round, and every row carries the per-round time
ratio to the group's baseline (docs/results-schema.md). The command is an argument list (no
shell), so no path or config value is ever interpreted by a shell.
"""

import subprocess
import sys

from pipeline_common import start


def main(smk):
    start(smk)
    p = smk.params
    cmd = [p.membptt, "bench", "--method", ",".join(p.methods), "--seq-len", str(p.seq_len),
           "--baseline", p.baseline, "--group", p.group, *p.args, "--out", smk.output.csv]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr, check=False).returncode
    if rc:
        raise SystemExit(rc)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
