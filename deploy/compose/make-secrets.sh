#!/usr/bin/env bash
# Writes the secrets compose.yaml reads, once, next to it in ./secrets
# (ignored by git): the cluster secret of the peer link and the ZooKeeper
# credential. Existing files are kept. Compose bind-mounts them into the
# containers as they are, and the nodes run as uid 10001: the files are
# readable (0644) inside a folder only its owner may enter (0700).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
umask 022
[[ -s "$dir/cluster.secret" ]] || head -c 32 /dev/urandom | base64 > "$dir/cluster.secret"
[[ -s "$dir/zookeeper.auth" ]] || printf 'chat:%s\n' "$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" > "$dir/zookeeper.auth"
echo "secrets in $dir"
