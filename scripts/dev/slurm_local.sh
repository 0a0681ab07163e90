#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the cluster tests and for trying the launcher
# without a cluster: munged + slurmctld + slurmd as plain background processes (no systemd needed).
#
# usage: scripts/dev/slurm_local.sh up | down | status
#   GSAM_SLURM_DIR   state, config, logs, pids (default /tmp/gsam-slurm); `up` writes $GSAM_SLURM_DIR/env.sh,
#                    source it before sbatch/srun/submitit (SLURM_CONF, and PATH with an `sacct` stand-in)
#   GSAM_SLURM_PORT  slurmctld's port; slurmd uses the next one (default 6817, Slurm's own default)
# exit status: 0 done, 1 failed, 3 cannot run here (not root, or no Slurm and no apt-get): reason on stderr.
#
# Nothing is written outside $GSAM_SLURM_DIR except what munge itself needs (/etc/munge/munge.key if
# missing, /run/munge); the daemons read our slurm.conf through -f / SLURM_CONF, never /etc/slurm.
set -euo pipefail
DIR=${GSAM_SLURM_DIR:-/tmp/gsam-slurm}
PORT=${GSAM_SLURM_PORT:-6817}
# the node's CPUs: the ones this process may use, not nproc's default answer, which is OMP_NUM_THREADS when that is
# set (the test suite sets it to 1, and a 1-CPU node never starts a 2-task job: it stays pending for ever)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
PKGS=(slurm-wlm slurmctld slurmd slurm-client munge)

cannot() { echo "slurm_local: cannot start a cluster here: $*" >&2; exit 3; }
alive() { [ -n "${1:-}" ] && ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }  # a zombie has exited

ensure_packages() {
    local missing=()
    for b in slurmctld slurmd sbatch srun scontrol munged; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
    done
    [ ${#missing[@]} = 0 ] && return 0
    command -v apt-get >/dev/null || cannot "${missing[*]} not installed and no apt-get to install ${PKGS[*]}"
    echo "slurm_local: installing ${PKGS[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; } >/dev/null ||
        cannot "apt-get install ${PKGS[*]} failed"
}

start_munge() {
    # A munged that already answers (a real cluster's, or one left by an earlier `up`) is used as it is.
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    # without systemd the package's postinst starts nothing and /run/munge does not exist
    if [ ! -s /etc/munge/munge.key ]; then  # postinst makes one; mungekey is munge >= 0.5.14
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    # -F and setpriv (which execs, unlike runuser) so that the PID we record is munged's own
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F >"$DIR/log/munged.out" 2>&1 &
    echo $! >"$DIR/munged.bgpid"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "slurm_local: munged did not come up (see $DIR/log/munged.out)" >&2; exit 1
}

write_conf() {
    local mem_mb=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # above slurmd's view drains the node
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=gsamlocal
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# a requeued job may start again after cred_expire + 1 seconds (Slurm's default: 120). 5 is the smallest value
# slurmctld 22.05 takes: with 1 or 2 it falls back to 120 (measured: a requeued job then waited 121 s, against 6.9 s)
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
JobRequeue=1
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
# finished jobs stay visible to scontrol (and so to the sacct stand-in) for 10 minutes
MinJobAge=600
NodeName=localhost CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

write_sacct() {
    # Without slurmdbd the real sacct fails, and submitit then never notices a job that died without
    # writing its result (job.result() waits forever). This answers submitit's one query
    # (`sacct -o JobID,State,NodeList --parsable2 -j ID ...`) from slurmctld's memory.
    mkdir -p "$DIR/bin"
    cat >"$DIR/bin/sacct" <<'EOF'
#!/usr/bin/env bash
ids=()
while [ $# -gt 0 ]; do
    case "$1" in
        -j|--jobs) IFS=, read -ra more <<<"$2"; ids+=("${more[@]}"); shift 2 ;;
        *) shift ;;
    esac
done
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do
    scontrol -o show job "${id%%_*}" 2>/dev/null | while read -r line; do
        declare -A f=()
        for kv in $line; do [[ $kv == *=* ]] && f[${kv%%=*}]="${kv#*=}"; done
        jid=${f[JobId]}
        if [ -n "${f[ArrayJobId]:-}" ]; then
            t=${f[ArrayTaskId]%%\%*}
            [[ $t == *[-,]* ]] && t="[$t]"
            jid="${f[ArrayJobId]}_$t"
        fi
        echo "$jid|${f[JobState]}|${f[NodeList]}"
    done
done
EOF
    chmod +x "$DIR/bin/sacct"
}

up() {
    [ "$(id -u)" = 0 ] || cannot "not root (munged and slurmd need root)"
    if alive "$(cat "$DIR/ctld.bgpid" 2>/dev/null)"; then
        echo "slurm_local: already up ($DIR); source $DIR/env.sh" >&2; return 0
    fi
    ensure_packages
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    start_munge
    write_conf
    write_sacct
    export SLURM_CONF=$DIR/slurm.conf
    # -D (foreground) and & so that the PIDs are the daemons' own; -N: the node is `localhost`,
    # whatever this machine's hostname is
    ( cd "$DIR" && exec slurmctld -D -f "$SLURM_CONF" >"$DIR/log/slurmctld.out" 2>&1 ) &
    echo $! >"$DIR/ctld.bgpid"
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
    ( cd "$DIR" && exec slurmd -D -N localhost -f "$SLURM_CONF" >"$DIR/log/slurmd.out" 2>&1 ) &
    echo $! >"$DIR/slurmd.bgpid"
    for _ in $(seq 150); do [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break; sleep 0.1; done
    if [ "$(sinfo -h -o %T 2>/dev/null)" != idle ]; then
        echo "slurm_local: the node did not become idle (logs in $DIR/log)" >&2; down; exit 1
    fi
    printf 'export SLURM_CONF=%q\nexport PATH=%q:"$PATH"\n' "$SLURM_CONF" "$DIR/bin" >"$DIR/env.sh"
    echo "slurm_local: up (partition debug, $CPUS CPUs); source $DIR/env.sh" >&2
}

stop() {  # stop one of our daemons by its PID and wait until it has exited
    local pid; pid=$(cat "$1" 2>/dev/null) || return 0
    if alive "$pid"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

down() {
    export SLURM_CONF=$DIR/slurm.conf
    if alive "$(cat "$DIR/ctld.bgpid" 2>/dev/null)" && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        # jobs run under slurmstepd, which outlives slurmd: end them while slurmd can still reach them
        scancel --full $(squeue -h -o %i) 2>/dev/null || true
        for _ in $(seq 150); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    fi
    stop "$DIR/slurmd.bgpid"
    stop "$DIR/ctld.bgpid"
    stop "$DIR/munged.bgpid"  # only there when `up` started munged
    rm -f "$DIR/env.sh"
}

status() {
    export SLURM_CONF=$DIR/slurm.conf
    for d in munged ctld slurmd; do
        pid=$(cat "$DIR/$d.bgpid" 2>/dev/null || true)
        if alive "$pid"; then echo "$d: running (pid $pid)"; else echo "$d: not running (by this script)"; fi
    done
    sinfo 2>/dev/null && squeue 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status   (state in \$GSAM_SLURM_DIR, default /tmp/gsam-slurm)" >&2; exit 2 ;;
esac
