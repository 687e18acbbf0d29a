#!/usr/bin/env bash
# A bot on the chat cluster's server API (docs/protocol.md, "Server API"),
# with nothing but curl.
#
# Usage:
#   CHAT_API_KEY=<key> docs/examples/bot.sh <command> [args]
#
#   online                     list the users online, page by page
#   greet                      send every online user a direct message
#   say <user> <text>          send <user> a direct message
#   post <room> <text>         post to <room> (the bot joins it if need be)
#   members <room>             list a room's members and who is online
#   create-room <room> [user...]  create a room with these members
#   delete-room <room> [reason]   delete a room for good
#   kick <user> [reason]       disconnect every connection of <user>
#
# Settings (environment):
#   CHAT_API_KEY       the key, as in the gateway's --api-keys-file (required)
#   CHAT_GATEWAY       the gateway's URL                 (http://127.0.0.1:8080)
#   BOT_NAME           the account the bot sends as      (newsbot)
#   BOT_PASSWORD       its password, to register it the first time
#                      (default: a random one; the bot never logs in)
#
# The bot's account is registered through the public POST /api/register
# when a message is to be sent and the account does not exist yet.
set -euo pipefail

GW=${CHAT_GATEWAY:-http://127.0.0.1:8080}
BOT=${BOT_NAME:-newsbot}
: "${CHAT_API_KEY:?set CHAT_API_KEY to a key of the file given to the gateway as --api-keys-file}"

die() {
	echo "bot: $*" >&2
	exit 1
}

# json_str TEXT: TEXT as a JSON string.
json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/\\n}
	s=${s//$'\r'/\\r}
	s=${s//$'\t'/\\t}
	printf '"%s"' "$s"
}

# api METHOD PATH [BODY]: call the server API; print the answer. An error
# answer ({"error": ...}) goes to standard error and fails.
api() {
	local method=$1 path=$2 body=${3-} out status
	local args=(-sS -X "$method" -H "Authorization: Bearer $CHAT_API_KEY" -w '\n%{http_code}')
	[[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
	out=$(curl "${args[@]}" "$GW$path") || die "cannot reach the gateway at $GW"
	status=${out##*$'\n'}
	out=${out%$'\n'*}
	out=${out%$'\n'} # the answer's own newline
	if ((status >= 400)); then
		echo "bot: $method $path: $status $out" >&2
		return 1
	fi
	printf '%s\n' "$out"
}

# ensure_bot: register the bot's account unless it exists (409).
ensure_bot() {
	local pw=${BOT_PASSWORD:-$(head -c 18 /dev/urandom | base64)} status
	status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$GW/api/register" \
		--data-binary "{\"username\":$(json_str "$BOT"),\"password\":$(json_str "$pw")}") ||
		die "cannot reach the gateway at $GW"
	case $status in
	201) echo "bot: registered the account $BOT" >&2 ;;
	409) ;; # it exists
	*) die "registering $BOT answered $status" ;;
	esac
}

say() { # USER TEXT
	api POST /api/server/messages \
		"{\"from\":$(json_str "$BOT"),\"to\":$(json_str "$1"),\"text\":$(json_str "$2")}"
}

# online_users: every online user's name, one a line, page by page.
online_users() {
	local after= page next
	while :; do
		page=$(api GET "/api/server/online?limit=100${after:+&after=$after}")
		grep -o '"username":"[^"]*"' <<<"$page" | cut -d'"' -f4
		next=$(grep -o '"next":"[^"]*"' <<<"$page" | cut -d'"' -f4 || true)
		[[ -n $next ]] || break
		after=$next
	done
}

cmd=${1:-}
shift || true
case $cmd in
online)
	online_users
	;;
greet)
	ensure_bot
	online_users | while read -r user; do
		[[ $user == "$BOT" ]] && continue
		say "$user" "Hello $user, this is $BOT." >/dev/null && echo "greeted $user"
	done
	;;
say)
	(($# == 2)) || die "usage: say <user> <text>"
	ensure_bot
	say "$1" "$2"
	;;
post)
	(($# == 2)) || die "usage: post <room> <text>"
	ensure_bot
	api POST /api/server/messages \
		"{\"from\":$(json_str "$BOT"),\"room\":$(json_str "$1"),\"text\":$(json_str "$2")}"
	;;
members)
	(($# == 1)) || die "usage: members <room>"
	api GET "/api/server/rooms/$1/members"
	;;
create-room)
	(($# >= 1)) || die "usage: create-room <room> [user...]"
	room=$1
	shift
	members=
	for u in "$@"; do members+=${members:+,}$(json_str "$u"); done
	api POST /api/server/rooms "{\"room\":$(json_str "$room"),\"members\":[$members]}"
	;;
delete-room)
	(($# >= 1)) || die "usage: delete-room <room> [reason]"
	api DELETE "/api/server/rooms/$1" "{\"reason\":$(json_str "${2-}")}"
	;;
kick)
	(($# >= 1)) || die "usage: kick <user> [reason]"
	api POST "/api/server/users/$1/disconnect" "{\"reason\":$(json_str "${2-}")}"
	;;
*)
	sed -n '2,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
