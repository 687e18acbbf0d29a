#!/usr/bin/env bash
# Usage: deploy/bench.sh        (what `make bench` calls)
#
# Builds bin/chatbench, starts a private cluster with deploy/run.sh (its own
# data folder and ports, so it runs beside `make run`), runs the standard
# benchmark set against it (connect, room, dm at several rates, and last
# failover, which kills the leader with kill -9), each scenario also
# against the baseline relay, writes docs/benchmarks.md from the JSON
# results, and stops the cluster. About ten minutes; chatbench is bounded
# at 14.
#
# chatbench reads each cluster process's CPU from /proc (the pid files
# deploy/run.sh keeps in the run folder, --pid-dir) over every dm and room
# run, and reports it per delivered message, beside its own.
#
# The bench cluster hashes passwords at the lowest bcrypt cost
# (CHAT_BCRYPT_COST=4), so that preparing thousands of users takes seconds;
# nothing measured hashes a password (WebSocket logins use tokens).
#
# The previous benchmark: docs/benchmarks.md sets every figure beside the
# same figure of the run kept in docs/benchmarks-previous.json (chatbench
# JSON results). That run stays the reference until you say otherwise: a
# run with CHAT_BENCH_SAVE=1 that completes copies its own results there,
# so it becomes the previous run of the runs after it (its page still
# compares it with the one before). Commit the two files together. Without
# CHAT_BENCH_SAVE, runs only compare, so trying a change again and again
# keeps comparing with the same reference.
#
# Settings (environment):
#   CHAT_BENCH_PORT     first of the ports the bench cluster uses   (23000)
#   CHAT_BENCH_ARGS     extra chatbench flags, appended to the set  ()
#   CHAT_BENCH_KEEP     1: keep the data folder (logs, results)     (0)
#   CHAT_BENCH_SAVE     1: this run becomes the previous benchmark  (0)
#
# The results JSON is also copied to .cache/bench-results.json.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
	print_usage "${BASH_SOURCE[0]}"
	exit 0
fi
(($# == 0)) || die "no arguments expected (settings are environment variables; see --help)"

BASE=${CHAT_BENCH_PORT:-23000}
if ! [[ $BASE =~ ^[0-9]+$ ]] || ((BASE <= 1024 || BASE >= 60000)); then
	die "CHAT_BENCH_PORT must be a port between 1025 and 59999"
fi
need_cmd go curl

BEGAN=$(date +%s)
DATA=$(mktemp -d "${TMPDIR:-/tmp}/chat-bench.XXXXXX")
RUN_PID=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [[ -n $RUN_PID ]] && alive "$RUN_PID"; then
		say "stopping the bench cluster"
		kill -TERM "$RUN_PID" 2>/dev/null || true
		for ((i = 0; i < 600; i++)); do
			alive "$RUN_PID" || break
			sleep 0.1
		done
		alive "$RUN_PID" && kill -KILL "$RUN_PID" 2>/dev/null
	fi
	if [[ ${CHAT_BENCH_KEEP:-0} == 1 ]]; then
		say "kept $DATA"
	else
		rm -rf "$DATA"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

(cd "$CHAT_ROOT" && go build -o bin/chatbench ./cmd/chatbench) || die "building bin/chatbench failed"

GATEWAY=127.0.0.1:$((BASE + 80))
ADMIN="127.0.0.1:$((BASE + 201)),127.0.0.1:$((BASE + 202)),127.0.0.1:$((BASE + 203))"
say "starting the bench cluster in $DATA (ports from $BASE)"
# The cluster's settings that differ from the defaults (also named in the
# generated page).
CLUSTER_ENV=(CHAT_RATE_LIMIT=100000 CHAT_BCRYPT_COST=4)
env "${CLUSTER_ENV[@]}" CHAT_DATA_DIR="$DATA" CHAT_SKIP_INSTALL=1 CHAT_DEMO=0 CHAT_NODES=3 \
	CHAT_ZK_PORT=$((BASE + 1)) CHAT_REDIS_PORT=$((BASE + 2)) CHAT_MONGO_PORT=$((BASE + 3)) \
	CHAT_GATEWAY_ADDR=$GATEWAY CHAT_GATEWAY_ADMIN_ADDR=127.0.0.1:$((BASE + 200)) \
	CHAT_NODE_PORT=$((BASE + 11)) CHAT_PEER_PORT=$((BASE + 101)) CHAT_ADMIN_PORT=$((BASE + 201)) \
	CHAT_LOG_LEVEL=warn \
	setsid "$CHAT_ROOT/deploy/run.sh" </dev/null >"$DATA/run.log" 2>&1 &
RUN_PID=$!

# Wait (bounded) until the gateway lists all three nodes.
ready=0
for ((i = 0; i < 240; i++)); do
	alive "$RUN_PID" || { tail -n 30 "$DATA/run.log" >&2; die "deploy/run.sh exited early (log above)"; }
	if [[ $(curl -fsS "http://$GATEWAY/api/nodes" 2>/dev/null | grep -o '"id"' | wc -l) -ge 3 ]]; then
		ready=1
		break
	fi
	sleep 0.5
done
((ready == 1)) || { tail -n 30 "$DATA/run.log" >&2; die "the bench cluster did not come up within 120s"; }
say "bench cluster up: gateway http://$GATEWAY"

# The standard set, in this order:
# - connect: 10,000 idle logged-in connections on one node, the count the
#   memory target is set at. 10,000 on each of the three nodes would take
#   30,000 connections, over the 20,000 open files one process may hold
#   here (a hard limit that cannot be raised), so they go to one node.
# - room: 1,000 members over the three nodes, at 50 and 150 messages per
#   second (150,000 deliveries per second offered, the room target); before
#   dm, whose history backlog slows the MongoDB-wire store that room joins
#   write to.
# - dm: every pair across nodes, at 2,000, 5,000 and 10,000 messages per
#   second (the rates of the targets); 2,000 a second time, for 40 s, in
#   phases of 250 ms by turns: quiet, and with typing and read frames, 10
#   per user per second beside the messages. The page sets the message p99
#   of the chatter phases beside that of the quiet phases of the same run
#   (two runs a minute apart differ by more than chatter does). Short
#   phases spread a stall of the machine (100 ms or more, now and then)
#   over both kinds: two runs with next to no chatter (0.01 frames a
#   second per user) came out at +52% and +17% with phases of 1 s, at
#   -16% and +17% with phases of 250 ms.
# - failover last: it leaves the cluster a node short.
# The page lists them dm first.
# shellcheck disable=SC2054 # the commas are inside flag values
ARGS=(--gateway "http://$GATEWAY" --admin "$ADMIN" --with-baseline --pid-dir "$DATA/run"
	--scenarios connect,room,dm,failover --duration 10s --drain 10s
	--pairs 50 --rates 2000,5000,10000 --cross 1 --chatter 10 --chatter-rates 2000 --chatter-duration 40s --chatter-phase 250ms
	--conns 10000 --connect-nodes 1 --connect-rate 1000 --hold 3s
	--room-members 1000 --room-publishers 10 --room-rate 50,150
	--failover-rate 1000 --failover-duration 20s --failover-kill-after 5s
	--timeout 14m --out "$DATA/results.json")
# shellcheck disable=SC2206 # extra flags are meant to split
[[ -n ${CHAT_BENCH_ARGS:-} ]] && ARGS+=($CHAT_BENCH_ARGS)
"$CHAT_ROOT/bin/chatbench" "${ARGS[@]}"

mkdir -p "$CHAT_ROOT/.cache"
cp "$DATA/results.json" "$CHAT_ROOT/.cache/bench-results.json"
PREVIOUS=$CHAT_ROOT/docs/benchmarks-previous.json
[[ -f $PREVIOUS ]] || say "no $PREVIOUS: the page has no previous column"
"$CHAT_ROOT/bin/chatbench" report --in "$DATA/results.json" --previous "$PREVIOUS" --out "$CHAT_ROOT/docs/benchmarks.md" \
	--command "make bench   # deploy/bench.sh, which runs:" --cluster-env "${CLUSTER_ENV[*]}" --began "$BEGAN"
say "wrote docs/benchmarks.md"
if [[ ${CHAT_BENCH_SAVE:-0} == 1 ]]; then
	cp "$DATA/results.json" "$PREVIOUS"
	say "this run is now the previous benchmark ($PREVIOUS); commit it with docs/benchmarks.md"
fi
