#!/usr/bin/env bash
# Builds containerd, its runc shim and runc, the peer berth is measured
# against in `make bench`, into ${BERTH_TOOLS:-/var/cache/berth-tools}/bin and
# prints that directory on stdout (everything else goes to stderr).
# Idempotent: a binary already at its pinned version is left alone.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.2

TOOLS_DIR=${BERTH_TOOLS:-/var/cache/berth-tools}
BIN=$TOOLS_DIR/bin
log() { echo "containerd-build: $*" >&2; }

mkdir -p "$BIN"
exec 9>"$TOOLS_DIR/.containerd.lock"
flock 9
export GOFLAGS='' GOWORK=off

# have BINARY MODULE VERSION: BINARY was built from MODULE at VERSION.
have() {
	[[ -x $1 ]] && go version -m "$1" 2>/dev/null | grep -qE "(mod|dep)[[:space:]]+$2[[:space:]]+$3([[:space:]]|$)"
}

for cmd in containerd containerd-shim-runc-v2; do
	if ! have "$BIN/$cmd" github.com/containerd/containerd/v2 "$CONTAINERD_VERSION"; then
		log "building $cmd $CONTAINERD_VERSION"
		CGO_ENABLED=0 GOBIN=$BIN go install -trimpath "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION" >&2
	fi
done
if ! have "$BIN/runc" github.com/opencontainers/runc "$RUNC_VERSION"; then
	log "building runc $RUNC_VERSION"
	CGO_ENABLED=1 GOBIN=$BIN go install -trimpath -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION" >&2
fi
echo "$BIN"
