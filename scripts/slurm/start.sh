#!/usr/bin/env bash
# Starts a single-node SLURM with accounting (munged, MariaDB, slurmdbd, slurmctld, slurmd)
# with every file under BASE and every TCP listener on 127.0.0.1, for the integration tests.
# Needs root and the packages of scripts/install-test-deps.sh; no systemd.
#
# Usage: start.sh BASE     then: export SLURM_CONF=BASE/etc/slurm.conf; stop with stop.sh BASE
#
# Fixed ports: 6817 (slurmctld), 6818 (slurmd), 6819 (slurmdbd), $DBPORT (MariaDB, 13306), so
# one stack per machine. Daemons a previous run left under the same BASE are stopped first;
# a port held by anything else is an error naming the holder. The node has 4 CPUs and
# 2048 MiB whatever the machine has (config_overrides), so tests see the same node anywhere.
set -euo pipefail
BASE=${1:?usage: start.sh BASE_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
DBPORT=${DBPORT:-13306}

fail() { echo "start.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (the daemons run as root, munge and mysql)"
for command in munged munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin slurmdbd slurmctld slurmd sacctmgr scontrol sinfo setpriv; do
  command -v "$command" >/dev/null || fail "$command not found; run scripts/install-test-deps.sh"
done
HOST=$(hostname -s)
# NoInAddrAny binds the daemons to the address the host name resolves to: it must be loopback.
getent hosts "$HOST" | grep -q '^127\.' ||
  fail "host name $HOST does not resolve to 127.x; add '127.0.0.1 $HOST' to /etc/hosts"

mkdir -p "$BASE"
BASE=$(cd "$BASE" && pwd)
# A previous run under this BASE (a crashed test): stop what it left.
if compgen -G "$BASE/run/*.bgpid" >/dev/null; then
  echo "start.sh: stopping daemons a previous run left under $BASE" >&2
  bash "$HERE/stop.sh" "$BASE"
fi
for port in 6817 6818 6819 "$DBPORT"; do
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
  [ -z "$holder" ] || fail "port $port is in use (${holder//$'\n'/ }); stop the other SLURM stack first"
done

mkdir -p "$BASE"/{etc,run,log,state,spool,munge,mysql,mysql-run}
chmod 755 "$BASE" "$BASE/munge"
chown munge:munge "$BASE/munge"
chown mysql:mysql "$BASE/mysql" "$BASE/mysql-run"
setpriv --reuid=mysql --regid=mysql --clear-groups test -w "$BASE/mysql-run" ||
  fail "user mysql cannot reach $BASE (every parent directory needs o+x)"
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "timeout waiting for $what (logs in $BASE/log)"
}

# 1. munge, on the default socket: SLURM's client commands ignore AuthInfo=socket= for
#    slurmdbd connections. A munged already answering there is used as it is.
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "start.sh: using the munged already running on /run/munge" >&2
else
  if [ ! -f "$BASE/munge/munge.key" ]; then
    dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1024 count=1 2>/dev/null
    chown munge:munge "$BASE/munge/munge.key"
    chmod 400 "$BASE/munge/munge.key"
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  # --force: a socket or lock left by a munged that died is taken over.
  setpriv --reuid=munge --regid=munge --init-groups munged -F --force \
    --key-file="$BASE/munge/munge.key" --log-file="$BASE/munge/munged.log" \
    --pid-file="$BASE/munge/munged.pid" --seed-file="$BASE/munge/munged.seed" \
    >"$BASE/log/munged.out" 2>&1 &
  echo $! >"$BASE/run/munged.bgpid"
  wait_for munge bash -c 'munge -n | unmunge'
fi

# 2. MariaDB: own datadir, TCP on 127.0.0.1 only.
if [ ! -d "$BASE/mysql/mysql" ]; then
  mariadb-install-db --user=mysql --datadir="$BASE/mysql" --auth-root-authentication-method=socket \
    --skip-test-db >"$BASE/log/mysql-install.log" 2>&1 || fail "mariadb-install-db failed (see $BASE/log/mysql-install.log)"
fi
setpriv --reuid=mysql --regid=mysql --init-groups mariadbd --no-defaults --datadir="$BASE/mysql" \
  --socket="$BASE/mysql-run/mysqld.sock" --pid-file="$BASE/mysql-run/mysqld.pid" \
  --log-error="$BASE/mysql-run/mysqld.err" --bind-address=127.0.0.1 --port="$DBPORT" \
  --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --open-files-limit=10000 \
  >"$BASE/log/mysqld.out" 2>&1 &
echo $! >"$BASE/run/mysqld.bgpid"
wait_for mariadb mariadb-admin --socket="$BASE/mysql-run/mysqld.sock" ping
mariadb --socket="$BASE/mysql-run/mysqld.sock" -u root <<'SQL'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# 3. Configuration.
cat >"$BASE/etc/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageTRES=cpu,mem,node,billing
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
SlurmdParameters=config_overrides
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=4 RealMemory=2048 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
cat >"$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=6819
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DBPORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
chmod 600 "$BASE/etc/slurmdbd.conf" # slurmdbd refuses a conf others can read
export SLURM_CONF="$BASE/etc/slurm.conf"

# 4. slurmdbd, and the cluster registered before slurmctld starts.
slurmdbd -D >"$BASE/log/slurmdbd.out" 2>&1 &
echo $! >"$BASE/run/slurmdbd.bgpid"
wait_for slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster ci >/dev/null 2>&1 || true

# 5. slurmctld and slurmd, then wait for the node.
slurmctld -D -i >"$BASE/log/slurmctld.out" 2>&1 &
echo $! >"$BASE/run/slurmctld.bgpid"
wait_for slurmctld scontrol ping
slurmd -D >"$BASE/log/slurmd.out" 2>&1 &
echo $! >"$BASE/run/slurmd.bgpid"
wait_for "node idle" bash -c "sinfo -h -o %T | grep -q '^idle'"
echo "SLURM up: export SLURM_CONF=$SLURM_CONF"
