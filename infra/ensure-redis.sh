#!/usr/bin/env bash
# Makes sure redis-server and redis-cli exist (redis-cli joins local Redis Cluster nodes): Debian's
# redis-server and redis-tools packages when we are root, else says what to install.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server or redis-cli not found: installing Debian's redis-server and redis-tools packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server redis-tools >/dev/null
  # The package starts a system instance on 6379; Supernode runs its own, so stop that one.
  (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
  exit 0
fi
echo "redis-server and redis-cli are required. Install them with: sudo apt-get install -y redis-server redis-tools" >&2
echo "(or set SUPERNODE_KVPOOL__REDIS_URL to an existing Redis or Redis Cluster and skip the local one)" >&2
exit 1
