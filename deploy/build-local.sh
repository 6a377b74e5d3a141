#!/usr/bin/env bash
# Build the ser-worker, ser-gateway, ser-dashboard and ser-archive images (and ser-trainer with --trainer) where no container registry can be
# reached: a Debian bookworm base is made with debootstrap from the Debian mirror (python3, pip, CA
# certificates; the host's CA bundle is copied in, so pip reaches PyPI where TLS is inspected),
# imported as ser-base:bookworm, and passed to the Dockerfiles as BASE_IMAGE. The classic builder is
# used (no BuildKit frontend to pull); the root .dockerignore keeps the context small.
#
#   bash deploy/build-local.sh [--trainer]
# env: SER_BASE_IMAGE (default ser-base:bookworm; an existing image is reused), DEBIAN_MIRROR.
# Exit 2 when there is no Docker engine or no debootstrap (saying so), else docker's status.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${SER_BASE_IMAGE:-ser-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "build-local: no Docker engine (docker info failed): nothing built" >&2
    exit 2
fi
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "build-local: needs debootstrap to make $BASE (apt-get install debootstrap)" >&2
        exit 2
    fi
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "build-local: debootstrap bookworm into $root (a few minutes)" >&2
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,passwd \
        bookworm "$root" "$MIRROR" >/dev/null
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
        - "$BASE" >/dev/null
    echo "build-local: imported $BASE" >&2
fi
export DOCKER_BUILDKIT=0
docker build -q --build-arg BASE_IMAGE="$BASE" -f deploy/Dockerfile.worker -t ser-worker:0.1.0 .
docker build -q --build-arg BASE_IMAGE="$BASE" -f deploy/Dockerfile.gateway -t ser-gateway:0.1.0 .
docker build -q --build-arg BASE_IMAGE="$BASE" -f deploy/Dockerfile.dashboard -t ser-dashboard:0.1.0 .
docker build -q --build-arg BASE_IMAGE="$BASE" -f deploy/Dockerfile.archive -t ser-archive:0.1.0 .
if [ "${1:-}" = "--trainer" ]; then
    docker build -q --build-arg BASE_IMAGE="$BASE" -f deploy/Dockerfile.trainer -t ser-trainer:0.1.0 .
fi
echo "build-local: built ser-worker:0.1.0, ser-gateway:0.1.0, ser-dashboard:0.1.0, ser-archive:0.1.0${1:+ and ser-trainer:0.1.0} on $BASE" >&2
