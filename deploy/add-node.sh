#!/usr/bin/env bash
# Usage: deploy/add-node.sh ID CLIENT-PORT PEER-PORT [ADMIN-PORT]
#        deploy/add-node.sh ID
#    e.g. deploy/add-node.sh n4 9004 9104 9204
#         deploy/add-node.sh n1
#
# Starts one more chat node against the ZooKeeper, Redis and mongostore of a
# running `make run` (deploy/run.sh) with the same CHAT_DATA_DIR. The node
# registers in ZooKeeper, the leader links to it and the gateway starts
# handing it out. Ports may also be given as host:port. ADMIN-PORT serves
# the node's GET /metrics and /debug/pprof/; without it the node has no
# admin listener.
#
# With the ID alone it starts again a node this run started before (one of
# `make run`'s n1..nN, or one added here) that has stopped, with the same
# ports: the way to restart a node, e.g. after a new bin/node was built.
#
# Its log is $CHAT_DATA_DIR/logs/ID.log; `make run` stops it with the rest
# on Ctrl-C. To stop only this node: kill "$(cat $CHAT_DATA_DIR/run/node-ID.pid)"
# (SIGTERM drains it: clients are told to reconnect elsewhere).
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	print_usage "${BASH_SOURCE[0]}"
	exit 2
}
[[ $# -eq 1 || $# -eq 3 || $# -eq 4 ]] || usage
ID=$1
[[ $ID =~ ^[A-Za-z0-9._-]+$ ]] || die "node id '$ID' may hold only letters, digits, '.', '_' and '-'"
addr() { # PORT or HOST:PORT -> HOST:PORT
	if [[ $1 =~ ^[0-9]+$ ]]; then
		echo "127.0.0.1:$1"
	elif [[ $1 =~ ^[^:]+:[0-9]+$ ]]; then
		echo "$1"
	else
		die "'$1' is neither a port nor host:port"
	fi
}

DATA=${CHAT_DATA_DIR:-$CHAT_ROOT/data}
[[ -d $DATA ]] && DATA=$(cd "$DATA" && pwd)
RUN=$DATA/run
[[ -f $RUN/env ]] || die "no running cluster uses $DATA: start it with 'make run' (or set CHAT_DATA_DIR to the folder it uses)"
if flock -n "$RUN/lock" true; then
	die "no running cluster uses $DATA ('make run' is not running); start it first"
fi
# shellcheck source=/dev/null
source "$RUN/env"

pidfile=$RUN/node-$ID.pid
addrfile=$RUN/node-$ID.addr
pid=$(pid_of "$pidfile")
if [[ -n $pid ]] && ours "$pid" "$DATA" "$CHAT_ROOT/bin"; then
	die "node $ID is already running (pid $pid); to restart it, stop it first: kill -TERM $pid"
fi

if [[ $# -eq 1 ]]; then
	# The addresses it had (written by run.sh, or by this script).
	[[ -f $addrfile ]] || die "this run has not started a node $ID: give its ports (deploy/add-node.sh $ID CLIENT-PORT PEER-PORT [ADMIN-PORT])"
	read -r LISTEN PEER ADMIN <"$addrfile" || true
	[[ -n ${LISTEN:-} && -n ${PEER:-} ]] || die "$addrfile does not hold the node's addresses; give its ports"
	ADMIN=${ADMIN:-}
else
	LISTEN=$(addr "$2")
	PEER=$(addr "$3")
	ADMIN=
	if [[ $# -eq 4 ]]; then
		ADMIN=$(addr "$4")
	fi
fi
[[ $LISTEN != "$PEER" ]] || die "the client and peer addresses must differ"
[[ -z $ADMIN || ($ADMIN != "$LISTEN" && $ADMIN != "$PEER") ]] || die "the admin address must differ from the client and peer addresses"
for a in "$LISTEN" "$PEER" ${ADMIN:+"$ADMIN"}; do
	if (exec 3<>"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null; then
		die "address $a is already in use"
	fi
done
[[ -x $CHAT_ROOT/bin/node ]] || die "bin/node is missing: run 'make build'"

log=$DATA/logs/$ID.log
[[ -f $log ]] && mv -f "$log" "$log.1"
# A Ctrl-C while the node starts is acted on once its pid is in its pid
# file: `make run` then stops it with the rest.
interrupted=0
trap 'interrupted=1' INT TERM HUP
launch_recorded "$pidfile" "$log" "$RUN/node-$ID.exit" "$CHAT_ROOT/bin/node" --id "$ID" --listen "$LISTEN" --peer-listen "$PEER" --admin-listen "$ADMIN" \
	--zk "$CHAT_ZK" --redis "$CHAT_REDIS" --mongo "$CHAT_MONGO" \
	--cluster-secret-file "$CHAT_CLUSTER_SECRET_FILE" --zk-auth-file "${CHAT_ZK_AUTH_FILE:-}" \
	--word-filter-file "${CHAT_WORD_FILTER_FILE:-}" \
	--bcrypt-cost "${CHAT_BCRYPT_COST:-10}"
trap - INT TERM HUP
if ((interrupted == 1)); then
	echo "$LISTEN $PEER $ADMIN" >"$addrfile"
	say "interrupted; node $ID (pid $LAUNCHED_PID) goes on starting, and make run stops it with the rest"
	exit 130
fi
node_up() { (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null; }
if ! wait_until "node $ID" "$LAUNCHED_PID" "$log" 60 node_up; then
	stop_proc "$LAUNCHED_PID" 10 || true
	rm -f "$pidfile"
	exit 1
fi
echo "$LISTEN $PEER $ADMIN" >"$addrfile"
say "node $ID up: ws://$LISTEN/ws (peer link $PEER${ADMIN:+, metrics http://$ADMIN/metrics}), pid $LAUNCHED_PID, log $log"
