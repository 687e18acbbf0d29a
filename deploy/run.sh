#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions called from traps
# Usage: deploy/run.sh        (what `make run` calls)
#
# Installs what is missing, builds bin/node, bin/gateway, bin/chat and
# bin/mongostore, then starts ZooKeeper, Redis, mongostore (the MongoDB-wire
# store), the gateway and three chat nodes on loopback, all data under one
# folder, and creates the demo users and rooms where they are missing.
# Ctrl-C (or SIGTERM, SIGHUP) stops everything it started: the nodes first,
# then the gateway, then the dependencies. Once stopping began, further
# signals are ignored until all of it is stopped.
#
# While it runs it reports any of its processes that ends. A node stopped on
# purpose (kill -TERM "$(cat $CHAT_DATA_DIR/run/node-n1.pid)") is reported as
# stopped; `deploy/add-node.sh n1` starts it again with the same id and
# ports.
#
# Settings (environment):
#   CHAT_DATA_DIR      data, logs, the cluster secret, the
#                      ZooKeeper credential and the server
#                      API's demo key (api.keys)              (./data)
#   CHAT_ZK_PORT       ZooKeeper client port                  (2181)
#   CHAT_REDIS_PORT    Redis port                             (6379)
#   CHAT_MONGO_PORT    mongostore port                        (27017)
#   CHAT_GATEWAY_ADDR  gateway HTTP address                   (127.0.0.1:8080)
#   CHAT_GATEWAY_ADMIN_ADDR  gateway admin address (pprof)    (127.0.0.1:9200)
#   CHAT_NODES         how many nodes, n1..nN                 (3)
#   CHAT_NODE_PORT     client port of n1; n2 gets the next... (9001)
#   CHAT_PEER_PORT     peer-link port of n1; likewise         (9101)
#   CHAT_ADMIN_PORT    admin port of n1 (/metrics, pprof); likewise (9201)
#   CHAT_LOG_LEVEL     log level of gateway and nodes         (info)
#   CHAT_WORD_FILTER_FILE  words the nodes mask    (deploy/filter-words.txt)
#   CHAT_BCRYPT_COST   bcrypt cost of new password hashes, 4..31 (10);
#                      lower only for load tests (deploy/bench.sh uses 4)
#   CHAT_SKIP_INSTALL  1: do not run deploy/install.sh
#   CHAT_DEMO          0: skip the demo users, rooms and agent (1)
#
# Everything listens on 127.0.0.1. The logs are in $CHAT_DATA_DIR/logs/;
# deploy/add-node.sh starts one more node while this runs.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
	print_usage "${BASH_SOURCE[0]}"
	exit 0
fi
(($# == 0)) || die "no arguments expected (settings are environment variables; see --help)"

ZK_PORT=${CHAT_ZK_PORT:-2181}
REDIS_PORT=${CHAT_REDIS_PORT:-6379}
MONGO_PORT=${CHAT_MONGO_PORT:-27017}
GATEWAY_ADDR=${CHAT_GATEWAY_ADDR:-127.0.0.1:8080}
NODES=${CHAT_NODES:-3}
NODE_PORT=${CHAT_NODE_PORT:-9001}
PEER_PORT=${CHAT_PEER_PORT:-9101}
ADMIN_PORT=${CHAT_ADMIN_PORT:-9201}
GATEWAY_ADMIN_ADDR=${CHAT_GATEWAY_ADMIN_ADDR:-127.0.0.1:9200}
for v in ZK_PORT REDIS_PORT MONGO_PORT NODES NODE_PORT PEER_PORT ADMIN_PORT; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "CHAT_$v must be a number, not '${!v}'"
done
[[ $GATEWAY_ADDR =~ ^[^:]+:[0-9]+$ ]] || die "CHAT_GATEWAY_ADDR must be host:port, not '$GATEWAY_ADDR'"
[[ $GATEWAY_ADMIN_ADDR =~ ^[^:]+:[0-9]+$ ]] || die "CHAT_GATEWAY_ADMIN_ADDR must be host:port, not '$GATEWAY_ADMIN_ADDR'"
((NODES >= 1)) || die "CHAT_NODES must be at least 1"
BCRYPT_COST=${CHAT_BCRYPT_COST:-10}
if ! [[ $BCRYPT_COST =~ ^[0-9]{1,2}$ ]] || ((10#$BCRYPT_COST < 4 || 10#$BCRYPT_COST > 31)); then
	die "CHAT_BCRYPT_COST must be a number from 4 to 31, not '$BCRYPT_COST'"
fi
BCRYPT_COST=$((10#$BCRYPT_COST))
DEMO=${CHAT_DEMO:-1}
[[ $DEMO == [01] ]] || die "CHAT_DEMO must be 0 or 1, not '$DEMO'"

if [[ ${CHAT_SKIP_INSTALL:-} != 1 ]]; then
	"$CHAT_ROOT/deploy/install.sh"
fi
zk_check_installed
need_cmd redis-server go setsid flock

DATA=${CHAT_DATA_DIR:-$CHAT_ROOT/data}
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
RUN=$DATA/run
LOGS=$DATA/logs
mkdir -p "$RUN" "$LOGS" "$DATA/zookeeper" "$DATA/redis" "$DATA/mongo"

# One run per data folder. Descriptor 9 is held until this script exits.
exec 9>"$RUN/lock"
flock -n 9 || die "another deploy/run.sh is already running with $DATA (stop it, or set CHAT_DATA_DIR)"

# Leftovers of a run that was killed: refuse to start over live processes
# of ours. A pid file whose process is gone, or whose pid now belongs to
# something else, is only stale.
shopt -s nullglob
leftover=()
for f in "$RUN"/*.pid; do
	pid=$(pid_of "$f")
	if [[ -n $pid ]] && ours "$pid" "$DATA" "$CHAT_ROOT/bin"; then
		name=${f##*/}
		leftover+=("$pid (${name%.pid})")
	fi
done
if ((${#leftover[@]} > 0)); then
	die "processes of an earlier run with $DATA are still running: ${leftover[*]}; stop them first (kill ${leftover[*]%% *})"
fi
rm -f "$RUN"/*.pid "$RUN"/*.exit "$RUN"/*.exit.tmp "$RUN"/*.addr "$RUN/env"

# Every port we are about to use must be free.
ports=("zookeeper:$ZK_PORT:CHAT_ZK_PORT" "redis:$REDIS_PORT:CHAT_REDIS_PORT"
	"mongostore:$MONGO_PORT:CHAT_MONGO_PORT" "gateway:${GATEWAY_ADDR##*:}:CHAT_GATEWAY_ADDR"
	"gateway admin:${GATEWAY_ADMIN_ADDR##*:}:CHAT_GATEWAY_ADMIN_ADDR")
for ((i = 1; i <= NODES; i++)); do
	ports+=("node n$i:$((NODE_PORT + i - 1)):CHAT_NODE_PORT" "node n$i peer link:$((PEER_PORT + i - 1)):CHAT_PEER_PORT"
		"node n$i admin:$((ADMIN_PORT + i - 1)):CHAT_ADMIN_PORT")
done
seen=" "
for entry in "${ports[@]}"; do
	IFS=: read -r what port var <<<"$entry"
	[[ $seen == *" $port "* ]] && die "port $port is configured twice (check $var and the other port settings)"
	seen+="$port "
	if port_in_use "$port"; then
		die "port $port ($what) is already in use; stop what holds it or choose another port with $var"
	fi
done

# Build.
for c in node gateway chat; do
	[[ -d $CHAT_ROOT/cmd/$c ]] || die "cmd/$c does not exist in $CHAT_ROOT"
done
say "building bin/node, bin/gateway, bin/chat, bin/mongostore"
(cd "$CHAT_ROOT" && go build -o bin/node ./cmd/node && go build -o bin/gateway ./cmd/gateway &&
	go build -o bin/chat ./cmd/chat) || die "build failed"
build_mongostore "$CHAT_ROOT/bin/mongostore"

# The cluster secret: made once, readable by the owner only, never in the repo.
SECRET=$DATA/cluster.secret
if [[ ! -s $SECRET ]]; then
	(umask 077 && head -c 32 /dev/urandom | base64 >"$SECRET")
	say "generated the cluster secret in $SECRET"
fi
chmod 600 "$SECRET"

# The cluster's ZooKeeper digest credential, made once in the same way: the
# nodes create every znode with an ACL that admits only it to change it.
# ZooKeeper's data under $DATA keeps those ACLs, so keep the file with it (a
# new credential is refused by the znodes the old one made). The nodes give
# the ACL to the znodes a run without a credential left world-writable.
ZK_AUTH=$DATA/zookeeper.auth
zk_auth_file "$ZK_AUTH"
((ZK_AUTH_MADE == 0)) || say "generated the ZooKeeper credential in $ZK_AUTH"

# The server API's keys (docs/protocol.md, "Server API"): a demo key, made
# once like the secret. Add a line "<name> <key>" for each system that
# calls the API; SIGHUP to the gateway reloads the file.
API_KEYS=$DATA/api.keys
if [[ ! -s $API_KEYS ]]; then
	(umask 077 && printf '# server API keys: <name> <key>, one a line\ndemo %s\n' \
		"$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" >"$API_KEYS")
	say "generated a demo server API key in $API_KEYS"
fi
chmod 600 "$API_KEYS"

# ---- process bookkeeping --------------------------------------------------

STOPPING=0
PENDING_SIGNAL=0
declare -A REPORTED=()   # pids whose end was reported
declare -A DEAD_SINCE=() # pids seen gone before their exit status was recorded

# How to run deploy/add-node.sh against this run (shown to the user).
ADD_NODE=deploy/add-node.sh
[[ $DATA == "$CHAT_ROOT/data" ]] || ADD_NODE="CHAT_DATA_DIR=$(printf '%q' "$DATA") $ADD_NODE"

# start_proc NAME PIDFILE CMD...: start a process whose log is $LOGS/NAME.log (the
# previous run's log is kept as NAME.log.1) and whose end is recorded next to
# PIDFILE (NAME.exit for NAME.pid). A signal that arrives meanwhile is acted
# on once the pid is in PIDFILE, so that the cleanup stops this process too.
start_proc() {
	local name=$1 pidfile=$2 log=$LOGS/$1.log
	shift 2
	[[ -f $log ]] && mv -f "$log" "$log.1"
	trap 'PENDING_SIGNAL=1' INT TERM HUP
	launch_recorded "$pidfile" "$log" "${pidfile%.pid}.exit" "$@"
	trap 'exit 0' INT TERM HUP
	((PENDING_SIGNAL == 0)) || exit 0
}

stop_pidfiles() { # GRACE PIDFILE...: stop these in parallel, then forget them
	local grace=$1 f pid name stoppers=()
	shift
	for f in "$@"; do
		pid=$(pid_of "$f")
		[[ -n $pid ]] || continue
		# Ended already (its pid may be another process's by now).
		[[ -z $(exit_status "${f%.pid}.exit" "$pid") ]] || continue
		name=${f##*/}
		name=${name%.pid}
		{ stop_proc "$pid" "$grace" || say "${name#node-} did not stop within ${grace}s; killed it"; } &
		stoppers+=($!)
	done
	((${#stoppers[@]} == 0)) || wait "${stoppers[@]}" || true
	rm -f "$@"
}

# cleanup stops everything this script started, whatever happens meanwhile:
# further INT, TERM and HUP (a second Ctrl-C, make passing its SIGTERM on, a
# SIGTERM to the whole process group, which also reaches the subshells that
# stop the processes) are ignored from here on, and so are a terminal or
# pipe that went away (SIGPIPE, failed writes) and errors. The subshells
# inherit the ignored signals. The watchdog goes last: if this script is
# killed anyway (SIGKILL), it kills what is left.
cleanup() {
	local rc=$?
	trap '' INT TERM HUP PIPE
	trap - EXIT
	set +e
	STOPPING=1
	local nodes=("$RUN"/node-*.pid)
	if ((${#nodes[@]} > 0)); then
		say "stopping nodes (they drain their clients first; Ctrl-C again changes nothing)"
		stop_pidfiles 30 "${nodes[@]}"
	fi
	[[ -f $RUN/gateway.pid ]] && stop_pidfiles 10 "$RUN/gateway.pid"
	local f
	for f in mongostore redis zookeeper; do
		[[ -f $RUN/$f.pid ]] && stop_pidfiles 20 "$RUN/$f.pid"
	done
	rm -f "$RUN/env"
	if [[ -n ${WATCHDOG_PID:-} ]]; then kill "$WATCHDOG_PID" 2>/dev/null; fi
	say "stopped"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 0' INT TERM HUP

start_watchdog "$RUN" keep

# ---- dependencies ---------------------------------------------------------

zk_write_conf "$DATA/zookeeper" "$ZK_PORT"
zk_command "$DATA/zookeeper"
start_proc zookeeper "$RUN/zookeeper.pid" "${ZK_CMD[@]}"
ZK_PID=$LAUNCHED_PID

start_proc redis "$RUN/redis.pid" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
	--dir "$DATA/redis" --appendonly yes --daemonize no --logfile '' --loglevel notice
REDIS_PID=$LAUNCHED_PID

start_proc mongostore "$RUN/mongostore.pid" \
	"$CHAT_ROOT/bin/mongostore" --listen "127.0.0.1:$MONGO_PORT" --dir "$DATA/mongo"
MONGO_PID=$LAUNCHED_PID

wait_until zookeeper "$ZK_PID" "$LOGS/zookeeper.log" 60 zk_ready "$ZK_PORT" || exit 1
say "zookeeper  127.0.0.1:$ZK_PORT"
wait_until redis "$REDIS_PID" "$LOGS/redis.log" 60 redis_ready "$REDIS_PORT" || exit 1
say "redis      127.0.0.1:$REDIS_PORT"
wait_until mongostore "$MONGO_PID" "$LOGS/mongostore.log" 60 mongo_ready "$LOGS/mongostore.log" "$MONGO_PORT" || exit 1
say "mongostore 127.0.0.1:$MONGO_PORT"

# What deploy/add-node.sh needs to start a node against this run.
cat >"$RUN/env" <<EOF
CHAT_ZK=127.0.0.1:$ZK_PORT
CHAT_REDIS=127.0.0.1:$REDIS_PORT
CHAT_MONGO=mongodb://127.0.0.1:$MONGO_PORT/
CHAT_CLUSTER_SECRET_FILE=$SECRET
CHAT_ZK_AUTH_FILE=$ZK_AUTH
CHAT_WORD_FILTER_FILE=${CHAT_WORD_FILTER_FILE:-$CHAT_ROOT/deploy/filter-words.txt}
CHAT_BCRYPT_COST=$BCRYPT_COST
EOF
# shellcheck source=/dev/null
source "$RUN/env"
export CHAT_ZK CHAT_REDIS CHAT_MONGO CHAT_CLUSTER_SECRET_FILE CHAT_ZK_AUTH_FILE CHAT_WORD_FILTER_FILE CHAT_BCRYPT_COST

# ---- gateway and nodes ----------------------------------------------------

start_proc gateway "$RUN/gateway.pid" "$CHAT_ROOT/bin/gateway" \
	--listen "$GATEWAY_ADDR" --admin-listen "$GATEWAY_ADMIN_ADDR" --redis "$CHAT_REDIS" --mongo "$CHAT_MONGO" \
	--bcrypt-cost "$BCRYPT_COST" --api-keys-file "$API_KEYS" --cluster-secret-file "$SECRET"
GATEWAY_PID=$LAUNCHED_PID

node_pids=()
for ((i = 1; i <= NODES; i++)); do
	listen=127.0.0.1:$((NODE_PORT + i - 1)) peer=127.0.0.1:$((PEER_PORT + i - 1)) admin=127.0.0.1:$((ADMIN_PORT + i - 1))
	# Its addresses, for deploy/add-node.sh to start it again the same way.
	echo "$listen $peer $admin" >"$RUN/node-n$i.addr"
	start_proc "n$i" "$RUN/node-n$i.pid" "$CHAT_ROOT/bin/node" --id "n$i" \
		--listen "$listen" --peer-listen "$peer" --admin-listen "$admin" \
		--zk "$CHAT_ZK" --redis "$CHAT_REDIS" --mongo "$CHAT_MONGO" \
		--cluster-secret-file "$SECRET" --zk-auth-file "$ZK_AUTH" --bcrypt-cost "$BCRYPT_COST"
	node_pids+=("$LAUNCHED_PID")
done

wait_until gateway "$GATEWAY_PID" "$LOGS/gateway.log" 60 port_in_use "${GATEWAY_ADDR##*:}" || exit 1
say "gateway    http://$GATEWAY_ADDR/ (metrics at /metrics; pprof on http://$GATEWAY_ADMIN_ADDR/debug/pprof/)"
for ((i = 1; i <= NODES; i++)); do
	wait_until "node n$i" "${node_pids[i - 1]}" "$LOGS/n$i.log" 60 port_in_use "$((NODE_PORT + i - 1))" || exit 1
	say "node n$i    ws://127.0.0.1:$((NODE_PORT + i - 1))/ws (peer link 127.0.0.1:$((PEER_PORT + i - 1)), metrics http://127.0.0.1:$((ADMIN_PORT + i - 1))/metrics)"
done
if ! wait_until "cluster" "$GATEWAY_PID" "$LOGS/gateway.log" 30 http_ok "$GATEWAY_ADDR" /api/nodes; then
	say "warning: the gateway does not list any live node yet; see the logs"
fi

# ---- demo data ------------------------------------------------------------

# The demo users and rooms (README, "Demo users"), through the public API.
# What exists is left alone, so this changes nothing on later runs. The
# seeder waits (bounded) for a listed node and retries while the cluster
# settles, printing its progress.
demo_note="demo users:  none (CHAT_DEMO=0)"
if ((DEMO == 1)); then
	say "seeding the demo users and rooms (CHAT_DEMO=0 skips this)"
	if "$CHAT_ROOT/bin/chat" seed-demo --gateway "http://$GATEWAY_ADDR" --wait 30s </dev/null >&2 &&
		"$CHAT_ROOT/bin/chat" admin agent add sam --capacity 3 --mongo "mongodb://127.0.0.1:$MONGO_PORT/" </dev/null >&2; then
		demo_note="demo users:  alice, bob, carol, dave (password: <name>-demo); try
               CHAT_PASSWORD=alice-demo bin/chat --user alice --room lobby
  support:     http://$GATEWAY_ADDR/support is the visitor page; the demo agent
               sam (password sam-demo) answers in the web client at http://$GATEWAY_ADDR/"
	else
		say "warning: seeding the demo data failed (see above); the cluster runs without it"
		demo_note="demo users:  not seeded (see above)"
	fi
fi

cat >&2 <<EOF

  chat cluster is up: http://$GATEWAY_ADDR/

  $demo_note
  server API:  key "demo" in $API_KEYS; try
               CHAT_API_KEY=\$(awk '\$1 == "demo" {print \$2}' $(printf '%q' "$API_KEYS")) docs/examples/bot.sh online
  logs:        $LOGS/<name>.log  (zookeeper, redis, mongostore, gateway, n1..n$NODES)
  data:        $DATA
  add a node:  $ADD_NODE n$((NODES + 1)) $((NODE_PORT + NODES)) $((PEER_PORT + NODES)) $((ADMIN_PORT + NODES))
  restart n1:  kill -TERM \$(cat $(printf '%q' "$RUN/node-n1.pid")); then $ADD_NODE n1
  Ctrl-C stops everything.

EOF

# ---- watch ----------------------------------------------------------------

# Report any process that ends while we run; keep the rest running (a node
# going away is something the cluster is built to survive). One that exits
# with status 0 or is ended by SIGTERM or SIGINT was stopped on purpose (a
# node drains and exits 0 on SIGTERM); anything else is unexpected.
while ((STOPPING == 0)); do
	for f in "$RUN"/*.pid; do
		pid=$(pid_of "$f")
		[[ -z $pid || -n ${REPORTED[$pid]:-} ]] && continue
		alive "$pid" && continue
		status=$(exit_status "${f%.pid}.exit" "$pid")
		# Its supervisor writes the status just after it ends: give it time.
		if [[ -z $status ]] && ((SECONDS - ${DEAD_SINCE[$pid]:=$SECONDS} < 5)); then
			continue
		fi
		REPORTED[$pid]=1
		name=${f##*/}
		name=${name%.pid}
		case $name in node-*) id=${name#node-} ;; *) id= ;; esac
		name=${name#node-}
		case $status in
		0 | 130 | 143)
			say "$name (pid $pid) stopped ($(describe_status "$status"))${id:+; start it again with: $ADD_NODE $id}"
			;;
		*)
			say "$name (pid $pid) exited unexpectedly ($(describe_status "$status")); its log: $LOGS/$name.log"
			log_tail "$LOGS/$name.log" 5
			[[ -z $id ]] || say "start it again with: $ADD_NODE $id"
			;;
		esac
	done
	sleep 1 &
	wait $! || true
done
