#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions called from traps
# Usage: deploy/with-deps.sh CMD [ARGS...]
#
# Starts a private ZooKeeper, Redis and mongostore (the MongoDB-wire store)
# on free loopback ports in a fresh temporary directory, waits until each
# really serves, runs CMD with
#
#   CHAT_TEST_ZK=127.0.0.1:<port>
#   CHAT_TEST_REDIS=127.0.0.1:<port>
#   CHAT_TEST_MONGO=mongodb://127.0.0.1:<port>/
#   CHAT_ZK_AUTH_FILE=<dir>/zookeeper.auth
#
# and, however CMD ends (success, failure, Ctrl-C, SIGTERM), stops all it
# started and removes the directory. The exit code is CMD's (128+n if
# signal n ended it).
#
# CHAT_ZK_AUTH_FILE is a ZooKeeper digest credential made for the run, as
# deploy/run.sh makes one per data folder: every chat node the tests start
# reads it from its environment, so the suite runs with the ACLs of a
# production cluster.
#
# With CHAT_TEST_ZK_ENSEMBLE=1 it also starts a 3-server ZooKeeper ensemble
# and exports
#
#   CHAT_TEST_ZK_ENSEMBLE=127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>
#   CHAT_TEST_ZK_ENSEMBLE_DIR=<dir>
#
# where <dir>/zk1 .. <dir>/zk3 each hold "pid" (the server's pid; it leads
# its own process group), "port" (its client port), "log" and an executable
# "start" that starts that server again (after a test killed it) without
# waiting for it, and records the new pid.
#
# CMD runs in its own process group; a signal to this script is passed on to
# that whole group, then (after CHAT_DEPS_GRACE seconds, default 20) the
# group is killed. CHAT_KEEP_DEPS_DIR=1 keeps the directory (with the
# dependencies' logs) after exit.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
	print_usage "${BASH_SOURCE[0]}"
	exit 2
fi

zk_check_installed
need_cmd redis-server setsid flock

GRACE=${CHAT_DEPS_GRACE:-20}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-deps.XXXXXX")
mkdir -p "$WORK/pids"
CMD_PID=
GOT_SIGNAL=
# Order of start; stopped in reverse. Entries are pid files.
PIDFILES=()

cleanup() {
	local rc=$? i pid
	trap - EXIT INT TERM HUP
	if [[ -n $CMD_PID ]] && group_alive "$CMD_PID"; then
		stop_proc "$CMD_PID" 5 || say "killed what was left of the command's processes"
	fi
	if [[ -n ${WATCHDOG_PID:-} ]]; then kill "$WATCHDOG_PID" 2>/dev/null || true; fi
	# Ensemble members may have been restarted by a test: read pids afresh.
	local files=("${PIDFILES[@]}")
	if [[ -d $WORK/ensemble ]]; then
		files+=("$WORK"/ensemble/zk*/pid)
	fi
	local stoppers=()
	for ((i = ${#files[@]} - 1; i >= 0; i--)); do
		pid=$(pid_of "${files[i]}")
		[[ -n $pid ]] || continue
		stop_proc "$pid" 10 &
		stoppers+=($!)
	done
	((${#stoppers[@]} == 0)) || wait "${stoppers[@]}" 2>/dev/null || true
	if [[ ${CHAT_KEEP_DEPS_DIR:-} == 1 ]]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}

on_signal() {
	GOT_SIGNAL=$1
	if [[ -n $CMD_PID ]]; then
		kill "-$1" -- "-$CMD_PID" 2>/dev/null || true
	else
		exit $((128 + $(kill -l "$1")))
	fi
}

trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

start_watchdog "$WORK" rm

# start_zk NAME DIR PORT [SERVER_LINES...]: start one ZooKeeper server.
start_zk() {
	local name=$1 dir=$2 port=$3
	shift 3
	zk_write_conf "$dir" "$port" "$@"
	zk_command "$dir"
	launch "$dir/pid" "$dir/log" "${ZK_CMD[@]}"
}

MONGOSTORE=$CHAT_ROOT/.cache/bin/mongostore
mkdir -p "$WORK/redis" "$WORK/mongo"

# start_dep NAME: start the dependency NAME on a free port; sets its
# *_PORT and *_PID.
start_dep() {
	free_port
	case $1 in
	zookeeper)
		ZK_PORT=$FREE_PORT
		start_zk zookeeper "$WORK/zk" "$ZK_PORT"
		ZK_PID=$LAUNCHED_PID
		;;
	redis)
		REDIS_PORT=$FREE_PORT
		launch "$WORK/pids/redis.pid" "$WORK/redis/log" \
			redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
			--save '' --appendonly no --daemonize no --logfile '' --loglevel warning
		REDIS_PID=$LAUNCHED_PID
		;;
	mongostore)
		MONGO_PORT=$FREE_PORT
		launch "$WORK/pids/mongostore.pid" "$WORK/mongo/log" \
			"$MONGOSTORE" --listen "127.0.0.1:$MONGO_PORT" --dir "$WORK/mongo/data"
		MONGO_PID=$LAUNCHED_PID
		;;
	esac
}

# wait_dep NAME: wait until NAME serves. If it could not bind its port
# (another process took it since we looked), start it again on another.
wait_dep() {
	local name=$1 attempt log
	for attempt in 1 2 3; do
		case $name in
		zookeeper) log=$WORK/zk/log && wait_until "$name" "$ZK_PID" "$log" 60 zk_ready "$ZK_PORT" && return 0 ;;
		redis) log=$WORK/redis/log && wait_until "$name" "$REDIS_PID" "$log" 30 redis_ready "$REDIS_PORT" && return 0 ;;
		mongostore) log=$WORK/mongo/log && wait_until "$name" "$MONGO_PID" "$log" 30 mongo_ready "$log" "$MONGO_PORT" && return 0 ;;
		esac
		if ((attempt < 3)) && grep -qi 'address already in use' "$log"; then
			say "$name: its port was taken meanwhile; trying another"
			start_dep "$name"
			continue
		fi
		exit 1
	done
}

# ZooKeeper first: the JVM takes the longest, so it boots while we do the rest.
start_dep zookeeper
PIDFILES+=("$WORK/zk/pid")

ENSEMBLE=
if [[ ${CHAT_TEST_ZK_ENSEMBLE:-} == 1 ]]; then
	servers=()
	cports=()
	for i in 1 2 3; do
		free_port
		q=$FREE_PORT
		free_port
		e=$FREE_PORT
		free_port
		cports+=("$FREE_PORT")
		servers+=("server.$i=127.0.0.1:$q:$e")
	done
	for i in 1 2 3; do
		d=$WORK/ensemble/zk$i
		zk_write_conf "$d" "${cports[i - 1]}" "${servers[@]}"
		echo "$i" >"$d/data/myid"
		echo "${cports[i - 1]}" >"$d/port"
		zk_command "$d"
		{
			echo '#!/usr/bin/env bash'
			echo "# Starts ZooKeeper server $i of the test ensemble (client port ${cports[i - 1]}); does not wait for it."
			echo 'set -euo pipefail'
			printf 'cd %q\n' "$d"
			printf 'setsid'
			printf ' %q' "${ZK_CMD[@]}"
			printf ' </dev/null >>%q 2>&1 &\n' "$d/log"
			printf 'echo "$!" >%q\n' "$d/pid"
		} >"$d/start"
		chmod +x "$d/start"
		"$d/start"
	done
	ENSEMBLE="127.0.0.1:${cports[0]},127.0.0.1:${cports[1]},127.0.0.1:${cports[2]}"
fi

start_dep redis
PIDFILES+=("$WORK/pids/redis.pid")
build_mongostore "$MONGOSTORE"
start_dep mongostore
PIDFILES+=("$WORK/pids/mongostore.pid")

wait_dep zookeeper
say "zookeeper on 127.0.0.1:$ZK_PORT"
wait_dep redis
say "redis on 127.0.0.1:$REDIS_PORT"
wait_dep mongostore
say "mongostore on 127.0.0.1:$MONGO_PORT"
if [[ -n $ENSEMBLE ]]; then
	for i in 1 2 3; do
		d=$WORK/ensemble/zk$i
		wait_until "zookeeper ensemble server $i" "$(pid_of "$d/pid")" "$d/log" 60 zk_ready "$(cat "$d/port")" || exit 1
	done
	say "zookeeper ensemble on $ENSEMBLE"
	export CHAT_TEST_ZK_ENSEMBLE=$ENSEMBLE CHAT_TEST_ZK_ENSEMBLE_DIR=$WORK/ensemble
fi

zk_auth_file "$WORK/zookeeper.auth"
export CHAT_ZK_AUTH_FILE=$WORK/zookeeper.auth
export CHAT_TEST_ZK=127.0.0.1:$ZK_PORT
export CHAT_TEST_REDIS=127.0.0.1:$REDIS_PORT
export CHAT_TEST_MONGO=mongodb://127.0.0.1:$MONGO_PORT/

# CMD in its own process group, so that a signal reaches all it started.
# stdin is passed explicitly: a background command would get /dev/null.
"${DEFAULT_SIGNALS[@]}" setsid "$@" <&0 9>&- &
CMD_PID=$!
echo "$CMD_PID" >"$WORK/pids/cmd.pid" # for the watchdog only
rc=0
wait "$CMD_PID" || rc=$?
if [[ -n $GOT_SIGNAL ]]; then
	# wait was cut short by the signal, which went on to CMD's group: give
	# CMD its grace to finish (cleanup then stops what is left of its group).
	for ((i = 0; i < GRACE * 10; i++)); do
		alive "$CMD_PID" || break
		sleep 0.1
	done
	if alive "$CMD_PID"; then
		say "command did not stop within ${GRACE}s of SIG$GOT_SIGNAL; killing it"
		kill -KILL -- "-$CMD_PID" 2>/dev/null || true
	fi
	wait "$CMD_PID" 2>/dev/null && rc=0 || rc=$?
fi
exit "$rc"
