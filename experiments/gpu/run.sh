#!/usr/bin/env bash
# The GPU reproduction in one command, on a fresh CUDA machine (a lent H100/H200: 16 cores, the
# image's python3 3.12 with its own torch build, e.g. 2.11.0+cu130, pytest, numpy, pandas and
# PyYAML; no Snakemake, nothing to download):
#
#   bash experiments/gpu/run.sh [OUT_DIR]          # default OUT_DIR: runs/gpu-run
#
# 1. records the device (nvidia-smi, torch, CUDA, cuDNN, Python) in OUT_DIR/DEVICE.txt;
# 2. builds the DP core in place (setup.py build_ext --inplace) and imports membptt from src/
#    (no pip install: the image's torch stays as it is; pyproject pins the CPU wheel's torch);
# 3. runs the CUDA tests, `pytest -m cuda tests/` -> OUT_DIR/cuda_tests.log;
# 4. measures every comparison group of experiments/config/gpu.yaml, one `membptt bench`
#    process each (experiments/gpu/gpurun.py run: the pipeline's own commands), into
#    OUT_DIR/groups/, and stops measuring MEMBPTT_GPU_MEASURE_S seconds (default 450) after
#    this script started, whatever is left (a group cut there has no CSV);
# 5. packs OUT_DIR into one archive, OUT_DIR.tgz (also copied to $OUT when that is set, as
#    on the lent machines, where $OUT is what comes back).
#
# Expected time (ESTIMATED from the committed groups, see experiments/config/gpu.yaml): about
# 5 minutes on an H200, 7.5 on an H100; at most 7.5 minutes plus the packing by construction.
#
# Afterwards, on any machine: unpack the archive as results/gpu-<card>/ (e.g. results/gpu-h100:
# the folder then holds this run's card.yaml), list it under `cards:` in
# experiments/config/gpu.yaml, commit it, and `snakemake all --cores 2 --configfile
# experiments/config/gpu.yaml` writes results/gpu-<card>/REPORT.md and its figures from it.
#
# Environment: PYTHON (default python3), MEMBPTT_GPU_CONFIG (default
# experiments/config/gpu.yaml), MEMBPTT_GPU_MEASURE_S (default 450).
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/../.." || exit 2
OUTDIR=${1:-runs/gpu-run}
PY=${PYTHON:-python3}
CONFIG=${MEMBPTT_GPU_CONFIG:-experiments/config/gpu.yaml}
MEASURE_S=${MEMBPTT_GPU_MEASURE_S:-450}
case $MEASURE_S in ''|*[!0-9]*) echo "run.sh: error: MEMBPTT_GPU_MEASURE_S must be a whole number of seconds, got '$MEASURE_S'" >&2; exit 2;; esac
[ -f "$CONFIG" ] || { echo "run.sh: error: no config file '$CONFIG'" >&2; exit 2; }

if [ -e "$OUTDIR" ] && [ ! -f "$OUTDIR/run.log" ]; then
  echo "run.sh: error: '$OUTDIR' exists and is not an earlier output of run.sh (no run.log): choose another OUT_DIR" >&2
  exit 2
fi
rm -rf "$OUTDIR" "$OUTDIR.tgz"
mkdir -p "$OUTDIR" || exit 2
exec > >(tee "$OUTDIR/run.log") 2>&1
phase() { echo "[run.sh] $(date -u +%Y-%m-%dT%H:%M:%SZ) +$(( $(date +%s) - T0 )) s: $*"; }
pack() {
  phase "pack $OUTDIR.tgz"
  "$PY" -m pip list --format=freeze > "$OUTDIR/pip-freeze.txt" 2>/dev/null
  (git rev-parse HEAD && git status --porcelain --untracked-files=no) > "$OUTDIR/git.txt" 2>&1
  phase "end ($1)"
  sync
  tar czf "$OUTDIR.tgz" -C "$(dirname "$OUTDIR")" "$(basename "$OUTDIR")"
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp "$OUTDIR.tgz" "$OUT/"; fi
}

phase "device"
{
  nvidia-smi -L
  nvidia-smi
  "$PY" - <<'EOF'
import platform, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version(), "python", platform.python_version(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
EOF
} > "$OUTDIR/DEVICE.txt" 2>&1
cat "$OUTDIR/DEVICE.txt" | tail -1
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "run.sh: error: torch sees no CUDA device (DEVICE.txt); this script measures on a GPU" >&2
  pack "no GPU"; exit 2
fi

phase "build"
if ! "$PY" setup.py -q build_ext --inplace > "$OUTDIR/install.log" 2>&1; then
  tail -20 "$OUTDIR/install.log"; pack "build failed"; exit 1
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import membptt, membptt.planning.dp as dp; print('membptt', membptt.__file__, 'DP core:', dp.backend())" \
  | tee -a "$OUTDIR/install.log"

phase "CUDA tests"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests/ > "$OUTDIR/cuda_tests.log" 2>&1
echo "tests rc=$? ended $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUTDIR/cuda_tests.log"
tail -2 "$OUTDIR/cuda_tests.log"

LEFT=$(( MEASURE_S - ($(date +%s) - T0) ))
phase "groups of $CONFIG ($LEFT s left to measure)"
"$PY" experiments/gpu/gpurun.py run --config "$CONFIG" --out "$OUTDIR" --card-name "${CARD:-unknown}" \
  --deadline-s "$(( LEFT > 1 ? LEFT : 1 ))" --min-group-s 30
RC=$?

SLUG=$(echo "${CARD:-unknown}" | awk '{print tolower($2)}')
pack "groups rc $RC"
echo "[run.sh] next: unpack $OUTDIR.tgz as results/gpu-${SLUG:-<card>}/, add it under cards: in $CONFIG, commit, then"
echo "[run.sh]   snakemake all --cores 2 --configfile $CONFIG"
exit $RC
