#!/usr/bin/env bash
# Builds the images the compose stack needs without any image registry, from Debian's packages only:
#   supernode-base:bookworm        Debian bookworm minbase + Python 3.11 (debootstrap, `docker import`),
#                                  plus one layer that trusts the CA certificates this host added
#                                  locally (only when it has any: pip inside a build then verifies
#                                  HTTPS where outbound traffic goes through a local CA) and removes
#                                  Debian Python's EXTERNALLY-MANAGED marker (PEP 668), as on the
#                                  official python:3.11-slim;
#   supernode-redis:bookworm       that base + Debian's redis-server (stands in for redis:7-alpine);
#   supernode-prometheus:bookworm  that base + Debian's prometheus (for prom/prometheus).
# Each image is reused when it exists (FORCE=1 rebuilds). Users with a registry need none of this.
# Then: docker build --build-arg BASE_IMAGE=supernode-base:bookworm -f infra/Dockerfile .
set -euo pipefail
cd "$(dirname "$0")"
BASE=${BASE:-supernode-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
export DOCKER_BUILDKIT=0
WORK=""
trap 'rm -rf "${WORK:-/nonexistent}"' EXIT

quiet_build() {  # docker build, its output shown only when it fails
  local log="${WORK:-/tmp}/build.log"
  [ -n "$WORK" ] || log=$(mktemp /tmp/supernode-build.XXXXXX)
  docker build -q "$@" >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
  [ -n "$WORK" ] || rm -f "$log"
}
exists() { [ "${FORCE:-0}" != "1" ] && docker image inspect "$1" >/dev/null 2>&1; }
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }

build_base() {
  command -v debootstrap >/dev/null || { echo "base-image: needs debootstrap (apt-get install -y debootstrap)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
  local root ctx
  WORK=$(mktemp -d /tmp/supernode-base.XXXXXX)
  root="$WORK/rootfs"
  echo "base-image: debootstrap $SUITE minbase + python3 (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - "$BASE-rootfs" >/dev/null
  ctx="$WORK/ctx"
  mkdir -p "$ctx/ca"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/"
    echo "base-image: trusting the $(ls "$ctx/ca" | wc -l) CA certificate(s) this host added"
  fi
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $BASE-rootfs
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
ENV LANG=C.UTF-8
CMD ["python3"]
DOCKERFILE
  quiet_build -t "$BASE" "$ctx"
  docker rmi "$BASE-rootfs" >/dev/null 2>&1 || true
}

build_tool() {  # NAME PACKAGE: the base plus one Debian package
  quiet_build --network host --build-arg BASE_IMAGE="$BASE" --build-arg PACKAGES="$2" \
    -t "$1" -f debian-package.Dockerfile .
}

if exists "$BASE"; then echo "base-image: reusing $BASE"; else build_base; echo "base-image: built $BASE ($(size "$BASE"))"; fi
for pair in supernode-redis:bookworm=redis-server supernode-prometheus:bookworm=prometheus; do
  name=${pair%%=*}
  if exists "$name"; then echo "base-image: reusing $name"; else build_tool "$name" "${pair#*=}"; echo "base-image: built $name ($(size "$name"))"; fi
done
