# shellcheck shell=bash disable=SC2034 # globals set here are read by the sourcing script
# Shared helpers for the deploy scripts (with-deps.sh, run.sh, add-node.sh).
# Source it; it does nothing on its own.
#
# Every long-lived process is started with launch() (or launch_recorded(),
# which also records how it ended): in its own session and process group (so
# a Ctrl-C in the terminal reaches only the script, which then stops things
# in order), with its output in a log file and its pid in a pid file.
# stop_proc() stops a whole process group: SIGTERM, a bounded wait, then
# SIGKILL.

CHAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=${0##*/}

# Java options for ZooKeeper: it starts in about 0.3 s with these and needs
# little memory for what we ask of it.
ZK_JAVA_OPTS=${ZK_JAVA_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData}

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# print_usage FILE: the comment block at the top of a script, as help text.
print_usage() {
	sed -n '2,/^set -euo/p' "$1" | sed '$d' | grep -v '^# shellcheck' | sed 's/^# \{0,1\}//' >&2
}

need_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 && continue
		[[ $c == go ]] && die "'go' not found: install Go (see go.mod for the version) from https://go.dev/dl/ and put it on PATH"
		die "'$c' not found; run deploy/install.sh (as root) first"
	done
}

# alive PID: the process exists and is not a zombie. Zombies count as dead:
# on some machines nothing reaps orphans, and kill -0 succeeds on them.
alive() {
	local stat
	[[ -n ${1:-} ]] || return 1
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# group_alive PGID: some non-zombie process is still in the process group.
group_alive() {
	local f stat st pgrp
	for f in /proc/[0-9]*/stat; do
		read -r stat 2>/dev/null <"$f" || continue
		stat=${stat##*) }
		read -r st _ pgrp _ <<<"$stat"
		if [[ $pgrp == "$1" && $st != Z ]]; then
			return 0
		fi
	done
	return 1
}

# stop_proc PID [GRACE_SECONDS] [SIGNAL]: signal the process group led by
# PID (a process started by launch), wait up to GRACE for all of it to exit,
# then SIGKILL what is left. Returns 1 if it had to use SIGKILL.
stop_proc() {
	local pid=$1 grace=${2:-10} sig=${3:-TERM} i
	[[ -n $pid ]] || return 0
	group_alive "$pid" || return 0
	kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 20; i++)); do
		group_alive "$pid" || return 0
		sleep 0.05
	done
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 40; i++)); do
		group_alive "$pid" || break
		sleep 0.05
	done
	return 1
}

# pid_of PIDFILE: the pid stored in a pid file, or nothing.
pid_of() {
	local p=
	read -r p 2>/dev/null <"$1" || true
	if [[ $p =~ ^[0-9]+$ ]]; then printf '%s' "$p"; fi
}

# DEFAULT_SIGNALS runs a command with SIGINT, SIGQUIT, SIGTERM and SIGHUP
# back to their default action: bash starts background commands with the
# first two ignored, a script may have been started with the others ignored
# (nohup ignores SIGHUP), and a command that ignores them cannot be stopped
# the way these scripts stop it.
DEFAULT_SIGNALS=()
if env --default-signal=INT,QUIT,TERM,HUP true 2>/dev/null; then
	# shellcheck disable=SC2054 # the comma is env's list separator
	DEFAULT_SIGNALS=(env --default-signal=INT,QUIT,TERM,HUP)
fi

# launch PIDFILE LOGFILE CMD...: start CMD in the background in its own
# session and process group, stdin from /dev/null, stdout and stderr
# appended to LOGFILE, and write its pid to PIDFILE. Sets LAUNCHED_PID.
# Descriptor 9 (run.sh's lock) is not inherited.
launch() {
	local pidfile=$1 logfile=$2
	shift 2
	"${DEFAULT_SIGNALS[@]}" setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
	LAUNCHED_PID=$!
	# Not a job of this shell: no "Killed" notice when it dies; the
	# scripts watch their processes through the pid files instead.
	disown "$LAUNCHED_PID"
	printf '%s\n' "$LAUNCHED_PID" >"$pidfile"
}

# launch_recorded PIDFILE LOGFILE EXITFILE CMD...: like launch, and when CMD
# ends, "PID STATUS" is written to EXITFILE (STATUS as in $?: the exit code,
# or 128+n if signal n ended it). CMD's parent is a small supervisor in a
# session of its own (no signal to this script or its terminal reaches it)
# that only waits for CMD; PIDFILE holds CMD's own pid, so that
# kill "$(cat PIDFILE)" reaches CMD. A trapped signal that arrives meanwhile
# does not cut this short, so the pid always reaches PIDFILE.
launch_recorded() {
	local pidfile=$1 logfile=$2 exitfile=$3 fd rc
	shift 3
	rm -f "$exitfile"
	# shellcheck disable=SC2016 # the script is expanded by the supervisor
	exec {fd}< <(exec setsid bash -c '
		exitfile=$1 logfile=$2
		shift 2
		"$@" </dev/null >>"$logfile" 2>&1 &
		pid=$!
		echo "$pid"
		exec >/dev/null
		wait "$pid" && rc=0 || rc=$?
		echo "$pid $rc" >"$exitfile.tmp" && mv -f "$exitfile.tmp" "$exitfile"
	' supervise "$exitfile" "$logfile" "${DEFAULT_SIGNALS[@]}" setsid "$@" </dev/null 2>/dev/null 9>&-)
	LAUNCHED_PID=
	until read -r -u "$fd" LAUNCHED_PID; do
		rc=$?
		((rc > 128)) || break # > 128: a trapped signal interrupted the read
	done
	exec {fd}<&-
	[[ $LAUNCHED_PID =~ ^[0-9]+$ ]] || die "could not start $1"
	printf '%s\n' "$LAUNCHED_PID" >"$pidfile"
}

# exit_status EXITFILE PID: the status launch_recorded wrote for PID, or
# nothing if PID has not ended (or the file is about another process).
exit_status() {
	local p='' st=''
	read -r p st 2>/dev/null <"$1" || true
	if [[ $p == "$2" && $st =~ ^[0-9]+$ ]]; then printf '%s' "$st"; fi
}

# describe_status STATUS: "exit status 0", "ended by SIGKILL", or "exit
# status unknown" for an empty STATUS.
describe_status() {
	local sig
	if [[ -z $1 ]]; then
		printf 'exit status unknown'
	elif (($1 > 128)) && sig=$(kill -l "$(($1 - 128))" 2>/dev/null); then
		printf 'ended by SIG%s' "$sig"
	else
		printf 'exit status %s' "$1"
	fi
}

# ours PID DIR...: PID is alive and is a process these scripts started for
# one of the DIRs: one of its arguments names a path in a DIR, or it works
# in one (redis-server rewrites its command line but runs in its data
# folder). A pid file left by an earlier run may name a process that ended
# long ago, its pid since reused by something else.
ours() {
	local pid=$1 d a cwd argv=()
	shift
	alive "$pid" || return 1
	mapfile -d '' argv 2>/dev/null <"/proc/$pid/cmdline" || return 1
	cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || cwd=
	for d in "$@"; do
		[[ -n $cwd && ($cwd == "$d" || $cwd == "$d"/*) ]] && return 0
		for a in "${argv[@]}"; do
			[[ $a == "$d" || $a == *"$d"/* ]] && return 0
		done
	done
	return 1
}

# log_tail FILE [LINES]: print the end of a log to stderr, indented.
log_tail() {
	[[ -f $1 ]] || return 0
	printf '%s: last lines of %s:\n' "$PROG" "$1" >&2
	tail -n "${2:-20}" "$1" | sed 's/^/    /' >&2
}

# port_in_use PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: set FREE_PORT to a port of 127.0.0.1 that nothing listens on, picked at
# random below the kernel's ephemeral range (so it never collides with the
# ports tests get from listening on :0), and not handed out before by this
# script.
_given_ports=" "
free_port() {
	local lo=20000 hi=32767 p i eph
	read -r eph _ 2>/dev/null </proc/sys/net/ipv4/ip_local_port_range || eph=32768
	if ((eph > lo + 1000)); then hi=$((eph - 1)); fi
	for ((i = 0; i < 200; i++)); do
		p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
		[[ $_given_ports == *" $p "* ]] && continue
		port_in_use "$p" && continue
		_given_ports+="$p "
		FREE_PORT=$p
		return 0
	done
	die "no free port found between $lo and $hi"
}

# ---- ZooKeeper ------------------------------------------------------------

zk_check_installed() {
	[[ -f /usr/share/java/zookeeper.jar ]] || die "ZooKeeper is not installed (/usr/share/java/zookeeper.jar missing); run deploy/install.sh (as root) first"
	need_cmd java
}

# zk_write_conf DIR CLIENT_PORT [SERVER_LINES...]: write DIR/zoo.cfg and
# DIR/log4j.properties for a server whose data lives in DIR/data. With
# SERVER_LINES ("server.1=127.0.0.1:p:q" ...) it is an ensemble member and
# DIR/data/myid must be written by the caller.
zk_write_conf() {
	local dir=$1 port=$2 line
	shift 2
	mkdir -p "$dir/data"
	{
		echo "tickTime=200"
		echo "initLimit=25"
		echo "syncLimit=10"
		echo "dataDir=$dir/data"
		echo "clientPort=$port"
		echo "clientPortAddress=127.0.0.1"
		echo "admin.enableServer=false"
		echo "maxSessionTimeout=20000"
		echo "maxClientCnxns=0"
		echo "4lw.commands.whitelist=*"
		echo "autopurge.snapRetainCount=3"
		echo "autopurge.purgeInterval=1"
		for line in "$@"; do echo "$line"; done
	} >"$dir/zoo.cfg"
	cat >"$dir/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
EOF
}

# zk_command DIR: the command line that runs the server configured in DIR.
zk_command() {
	local dir=$1 cp
	cp="$dir:/usr/share/java/zookeeper.jar"
	# A logging binding for slf4j, so the server's log reaches our file.
	[[ -f /usr/share/java/slf4j-log4j12.jar ]] && cp+=":/usr/share/java/slf4j-log4j12.jar"
	[[ -f /usr/share/java/log4j-1.2.jar ]] && cp+=":/usr/share/java/log4j-1.2.jar"
	# shellcheck disable=SC2206 # ZK_JAVA_OPTS is a list of options
	ZK_CMD=(java $ZK_JAVA_OPTS -Dzookeeper.jmx.log4j.disable=true -cp "$cp"
		org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg")
}

# zk_ready PORT: the server on PORT is serving (standalone, leader or follower).
zk_ready() {
	local out
	out=$(
		exec 2>/dev/null
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf 'srvr' >&3
		while IFS= read -r -t 2 line <&3; do printf '%s\n' "$line"; done
	) || return 1
	[[ $out == *"Mode: "* ]]
}

# zk_auth_file FILE: make FILE hold a new random ZooKeeper digest credential,
# chat:<32 random characters>, readable by the owner only, unless it holds
# one already. The nodes get it with --zk-auth-file; every znode they create
# then admits only that identity to change it. Sets ZK_AUTH_MADE to 1 if it
# made one.
zk_auth_file() {
	local file=$1 pw
	ZK_AUTH_MADE=0
	if [[ ! -s $file ]]; then
		pw=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
		(umask 077 && printf 'chat:%s\n' "$pw" >"$file")
		ZK_AUTH_MADE=1
	fi
	chmod 600 "$file"
}

# ---- Redis ----------------------------------------------------------------

# redis_ready PORT: Redis on PORT answers PING with PONG (not LOADING).
redis_ready() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf 'PING\r\n' >&3
		IFS= read -r -t 2 line <&3 || exit 1
		[[ $line == +PONG* ]]
	) 2>/dev/null
}

# ---- mongostore (FerretDB on SQLite) ---------------------------------------

# build_mongostore OUT: build deploy/mongostore into OUT. Fast when nothing
# changed (go's build cache); serialised so parallel runs do not collide.
build_mongostore() {
	local out=$1
	need_cmd go
	mkdir -p "$(dirname "$out")" "$CHAT_ROOT/.cache"
	(
		cd "$CHAT_ROOT/deploy/mongostore"
		flock "$CHAT_ROOT/.cache/mongostore.lock" \
			go build -tags ferretdb_no_postgresql -o "$out" .
	) || die "building deploy/mongostore failed"
}

# mongo_ready LOGFILE PORT: mongostore printed its ready line and accepts.
mongo_ready() {
	grep -q '^mongostore ready ' "$1" 2>/dev/null && port_in_use "$2"
}

# ---- HTTP -----------------------------------------------------------------

# http_ok ADDR PATH: GET http://ADDR/PATH answers 2xx.
http_ok() {
	local host=${1%:*} port=${1##*:}
	(
		exec 3<>"/dev/tcp/$host/$port" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
		IFS= read -r -t 3 line <&3 || exit 1
		[[ $line =~ ^HTTP/[0-9.]+\ 2[0-9][0-9] ]]
	) 2>/dev/null
}

# ---- waiting --------------------------------------------------------------

# wait_until NAME PID LOGFILE TIMEOUT CHECK...: run CHECK until it succeeds.
# Returns 1 (after printing the log's tail) if PID exits first or TIMEOUT
# seconds pass.
wait_until() {
	local name=$1 pid=$2 logfile=$3 timeout=$4 deadline
	shift 4
	deadline=$((SECONDS + timeout))
	while ! "$@"; do
		if ! alive "$pid"; then
			say "$name exited during start-up"
			log_tail "$logfile"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			say "$name not ready after ${timeout}s"
			log_tail "$logfile"
			return 1
		fi
		sleep 0.05
	done
}

# ---- watchdog -------------------------------------------------------------

# start_watchdog DIR [REMOVE]: start a detached process that, should this script die
# without cleaning up (SIGKILL), kills every process group whose pid is in a
# file named "pid" or "*.pid" under DIR, and removes DIR if REMOVE is "rm".
# Sets WATCHDOG_PID.
start_watchdog() {
	local dir=$1 remove=${2:-keep}
	# shellcheck disable=SC2016 # the script is expanded by the inner bash
	setsid bash -c '
		parent=$1 dir=$2 remove=$3
		alive() {
			local s; read -r s 2>/dev/null <"/proc/$1/stat" || return 1
			s=${s##*) }; [[ ${s%% *} != Z ]]
		}
		while alive "$parent"; do sleep 1; done
		shopt -s nullglob globstar
		for f in "$dir"/**/*.pid "$dir"/**/pid; do
			p=$(cat "$f" 2>/dev/null) || continue
			[[ $p =~ ^[0-9]+$ ]] && kill -KILL -- "-$p" 2>/dev/null
		done
		[[ $remove == rm ]] && rm -rf "$dir"
	' watchdog "$$" "$dir" "$remove" </dev/null >/dev/null 2>&1 9>&- &
	WATCHDOG_PID=$!
}
