#!/usr/bin/env bash
# Usage: deploy/install.sh
#
# Makes this machine ready to build, run and test the chat cluster:
#   - Debian packages zookeeper (with Java), redis-server, redis-sentinel
#     (the Sentinel failover test), chromium and a font (the headless
#     browser of the web client's tests), iproute2 and nftables (the test
#     of nodes on several hosts puts them in network namespaces and cuts one
#     off with a firewall rule), and make and gcc (for the race detector)
#     where absent, installed with apt-get only if missing (as root, or
#     through sudo);
#   - the Go modules of the root module and of deploy/mongostore.
# Idempotent, and quick when everything is present.
#
# The scripts start their own ZooKeeper and Redis on their own ports; they
# never use a system-wide service. If this script installs redis-server and
# the package starts the system service, it is stopped and disabled so that
# it does not hold port 6379, which `make run` uses by default.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# installed PKG: the Debian package is installed.
installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
if ! installed zookeeper || [[ ! -f /usr/share/java/zookeeper.jar ]] || ! command -v java >/dev/null; then
	missing+=(zookeeper)
fi
if ! installed redis-server || ! command -v redis-server >/dev/null; then
	missing+=(redis-server)
fi
# The Sentinel failover test (e2e) runs Debian's redis-sentinel.
if ! installed redis-sentinel || ! command -v redis-sentinel >/dev/null; then
	missing+=(redis-sentinel)
fi
# The browser tests of the web client (web/) drive Debian's chromium,
# headless; without recommends it comes without a font, so screenshots
# need one.
if ! installed chromium || ! command -v chromium >/dev/null; then
	missing+=(chromium)
fi
installed fonts-dejavu-core || missing+=(fonts-dejavu-core)
# The test of nodes on several hosts (e2e TestNodesOnSeveralHosts): ip for
# the network namespaces, nft for the rule that cuts one off.
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
# The rest is on any Debian system, but not always in a minimal one. The
# race detector (make test) needs cgo, hence a C compiler.
command -v make >/dev/null || missing+=(make)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v flock >/dev/null && command -v setsid >/dev/null || missing+=(util-linux)

if ((${#missing[@]} > 0)); then
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand (this script knows Debian/Ubuntu)"
	as_root=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "missing ${missing[*]}: run deploy/install.sh as root (no sudo found)"
		as_root=(sudo)
	fi
	had_redis=0 had_sentinel=0
	installed redis-server && had_redis=1
	installed redis-sentinel && had_sentinel=1
	say "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	"${as_root[@]}" apt-get update -qq
	"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if ((had_redis == 0)); then
		# The package may have started its own service on port 6379. Our
		# scripts run their own Redis; keep the port free for `make run`.
		if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
			"${as_root[@]}" systemctl disable --now redis-server.service >/dev/null 2>&1 || true
		elif [[ -x /etc/init.d/redis-server ]]; then
			"${as_root[@]}" /etc/init.d/redis-server stop >/dev/null 2>&1 || true
			command -v update-rc.d >/dev/null && { "${as_root[@]}" update-rc.d redis-server disable >/dev/null 2>&1 || true; }
		fi
	fi
	if ((had_sentinel == 0)); then
		# Likewise its Sentinel service, on port 26379.
		if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
			"${as_root[@]}" systemctl disable --now redis-sentinel.service >/dev/null 2>&1 || true
		elif [[ -x /etc/init.d/redis-sentinel ]]; then
			"${as_root[@]}" /etc/init.d/redis-sentinel stop >/dev/null 2>&1 || true
			command -v update-rc.d >/dev/null && { "${as_root[@]}" update-rc.d redis-sentinel disable >/dev/null 2>&1 || true; }
		fi
	fi
	[[ -f /usr/share/java/zookeeper.jar ]] || die "zookeeper installed but /usr/share/java/zookeeper.jar is missing"
	command -v java >/dev/null || die "zookeeper installed but java is not on PATH"
	command -v redis-server >/dev/null || die "redis-server installed but not on PATH"
	command -v redis-sentinel >/dev/null || die "redis-sentinel installed but not on PATH"
	command -v chromium >/dev/null || die "chromium installed but not on PATH"
	command -v nft >/dev/null || die "nftables installed but nft is not on PATH"
fi

command -v go >/dev/null || die "'go' not found: install Go $(sed -n 's/^go //p' "$CHAT_ROOT/go.mod") or newer from https://go.dev/dl/ and put it on PATH"
need_cmd setsid flock
(cd "$CHAT_ROOT" && go mod download) || die "go mod download failed for the root module"
(cd "$CHAT_ROOT/deploy/mongostore" && go mod download) || die "go mod download failed for deploy/mongostore"
