#!/usr/bin/env bash
# Prove the Slurm profile on a one-node cluster on localhost.
#
#   sudo experiments/slurm/run_local_cluster.sh [--keep-cluster]
#
# 1. installs Debian's slurmctld, slurmd and munge (apt-get) when missing;
# 2. writes /etc/slurm/slurm.conf for one node (this host) and starts munged, slurmctld, slurmd;
# 3. runs the small sweep experiments/slurm/sweep.yaml locally (--cores 2) and through
#    `--executor slurm` (profiles/slurm, plus --slurm-status-command squeue: this cluster has
#    no accounting database, so the plugin's default sacct status query would never answer);
# 4. checks that every job of the Slurm run ran as a Slurm job and that the results equal the
#    local run's (experiments/slurm/compare_runs.py: theory CSVs identical; measured CSVs
#    identical except timing and provenance columns);
# 5. stops the daemons it started (unless --keep-cluster).
#
# Meant for a throw-away machine or CI container (root, Debian/Ubuntu): it overwrites
# /etc/slurm/slurm.conf. Environment: PYTHON (default .venv/bin/python), WORK (default
# /tmp/membptt-slurm-check; the two runs go to $WORK/local and $WORK/slurm). Both runs import
# membptt from this checkout's src/ (PYTHONPATH, which sbatch --export=ALL hands to the Slurm
# jobs), also when PYTHON's environment has another checkout installed (e.g. when this script
# runs from a clean `git worktree` beside a working copy with edits in progress).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SNAKEMAKE="$(dirname "$PYTHON")/snakemake"
WORK="${WORK:-/tmp/membptt-slurm-check}"
KEEP=0
[[ "${1:-}" == "--keep-cluster" ]] && KEEP=1
SWEEP=experiments/slurm/sweep.yaml
NODE="$(hostname -s)"
log() { printf '\n[slurm-check %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [[ $EUID -ne 0 ]]; then
    echo "run as root (installs packages, writes /etc/slurm, starts daemons)" >&2
    exit 2
fi

# fail now, not minutes into the local run, when the package does not import (e.g. a compiled DP
# core older than the source: rebuild with `pip install -e .`)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import membptt, membptt.planning.dp as dp; print("membptt from", membptt.__file__, "DP backend", dp.backend())' \
    || { echo "membptt does not import with $PYTHON (see above)" >&2; exit 1; }

# -- 1. packages ---------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    log "installing slurmctld slurmd munge slurm-client"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd munge slurm-client
fi
log "$(slurmctld -V)"

# -- 2. configuration and daemons ----------------------------------------------------------------
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
# written by membptt experiments/slurm/run_local_cluster.sh: a one-node test cluster
ClusterName=membptt-local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# no accounting database: job states are only visible to squeue while the controller keeps
# them, so keep finished jobs for 10 minutes
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
chown munge:munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi

STARTED=()
stop_cluster() {
    if [[ $KEEP -eq 1 ]]; then
        log "cluster left running (--keep-cluster): ${STARTED[*]:-nothing started}"
        return
    fi
    for name in "${STARTED[@]}"; do
        case "$name" in
            slurmd) pidfile=/run/slurmd.pid ;;
            slurmctld) pidfile=/run/slurmctld.pid ;;
            munged) pidfile=/run/munge/munged.pid ;;
        esac
        if [[ -s $pidfile ]]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    log "stopped: ${STARTED[*]:-nothing}"
}
trap stop_cluster EXIT

if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    STARTED+=(munged)
fi
munge -n | unmunge >/dev/null && log "munge works"
if ! pgrep -x slurmctld >/dev/null; then
    slurmctld -c   # -c: clean start, no saved state
    STARTED+=(slurmctld)
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd
    STARTED+=(slurmd)
fi
for _ in $(seq 60); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
    [[ "$state" == idle* ]] && break
    if [[ "$state" == down* || "$state" == drain* ]]; then
        scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
    fi
    sleep 1
done
sinfo
[[ "$(sinfo -h -N -o '%T' | head -1)" == idle* ]] || { echo "node not idle" >&2; exit 1; }
srun -N1 -n1 hostname >/dev/null && log "srun works"

# -- 3. the sweep, locally and through Slurm ------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
log "local run -> $WORK/local"
t0=$SECONDS
"$SNAKEMAKE" all --cores 2 --configfile "$SWEEP" --config outdir="$WORK/local" -q \
    > "$WORK/local.log" 2>&1 || { tail -50 "$WORK/local.log"; exit 1; }
log "local run: $((SECONDS - t0)) s"

log "Slurm run -> $WORK/slurm"
t0=$SECONDS
"$SNAKEMAKE" all --profile profiles/slurm --configfile "$SWEEP" --config outdir="$WORK/slurm" \
    --jobs 4 \
    --slurm-status-command squeue --slurm-no-account \
    --slurm-init-seconds-before-status-checks 5 \
    --slurm-logdir "$WORK/slurm_logs" --slurm-keep-successful-logs \
    --default-resources slurm_partition=debug runtime=30 mem_mb=1000 cpus_per_task=1 \
    --set-resources bench_group:mem_mb=1000 \
        theory_curves:mem_mb=1000 \
    > "$WORK/slurm.log" 2>&1 || { tail -80 "$WORK/slurm.log"; exit 1; }
log "Slurm run: $((SECONDS - t0)) s"

# -- 4. checks -----------------------------------------------------------------------------------
n_jobs="$(grep -c 'Job .* has been submitted with SLURM jobid' "$WORK/slurm.log" || true)"
n_meta="$(grep -l '"slurm_job_id": "[0-9]' "$WORK"/slurm/results/theory/*.meta.json | wc -l)"
n_theory="$(ls "$WORK"/slurm/results/theory/*.meta.json | wc -l)"
log "Slurm jobs submitted: $n_jobs; theory files written inside a Slurm job: $n_meta/$n_theory"
squeue -h -t all -o '%i %j %T' | tail -5 || true
if [[ "$n_jobs" -lt 1 || "$n_meta" -ne "$n_theory" ]]; then
    echo "FAIL: the Slurm run did not run its jobs through Slurm" >&2
    exit 1
fi
"$PYTHON" experiments/slurm/compare_runs.py "$WORK/local" "$WORK/slurm"
log "OK: the Slurm run equals the local run"
