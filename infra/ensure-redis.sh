#!/usr/bin/env bash
# Makes sure a redis-server binary exists: Debian's package when we are root, else says what to install.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
  # The package starts a system instance on 6379; Supernode runs its own, so stop that one.
  (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
  exit 0
fi
echo "redis-server is required. Install it with: sudo apt-get install -y redis-server" >&2
echo "(or set SUPERNODE_KVPOOL__REDIS_URL to an existing Redis and skip the local one)" >&2
exit 1
