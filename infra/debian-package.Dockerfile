# A Debian package on the registry-free base (infra/base-image.sh): Debian's redis-server and
# prometheus stand in for the official redis and prom/prometheus images where no registry is reachable.
ARG BASE_IMAGE=supernode-base:bookworm
FROM ${BASE_IMAGE}
ARG PACKAGES
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${PACKAGES} >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
