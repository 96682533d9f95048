#!/usr/bin/env bash
# Installs the tools the conformance harness (test/critest/run.sh) needs into
# ${BERTH_TOOLS:-/var/cache/berth-tools}/bin and prints that directory on
# stdout (everything else goes to stderr):
#
#   critest   cri-tools' conformance suite, a `go test -c` binary
#   crictl    cri-tools' CLI, handy for poking at a running berth
#   ginkgo    the ginkgo CLI, at the version cri-tools pins (parallel runs)
#   registry  distribution's OCI registry, which serves the test images
#
# Idempotent: a tool already there at the pinned version is left alone (the
# version is read back from the binary with `go version -m`), so a second run
# takes a second. Everything is built from source through the Go module proxy;
# nothing else is downloaded except, on a machine without them, the Debian
# packages busybox (the test images' userland) and util-linux (critest runs
# ipcmk on the host).
set -euo pipefail

CRI_TOOLS_VERSION=v1.37.0
# Must match github.com/onsi/ginkgo/v2 in cri-tools' go.mod (checked below
# whenever critest is built).
GINKGO_VERSION=v2.32.1
REGISTRY_VERSION=v3.1.2

TOOLS_DIR=${BERTH_TOOLS:-/var/cache/berth-tools}
BIN=$TOOLS_DIR/bin
VERSION_PKG=sigs.k8s.io/cri-tools/pkg/version.Version

log() { echo "critest-tools: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$BIN"

# Two harness runs starting together must not build into the same place.
exec 9>"$TOOLS_DIR/.lock"
flock 9

# Builds happen outside any module (so the caller's go.mod and go.work are
# not consulted or touched) and land in a scratch directory first: an
# interrupted build never leaves a half-written binary that looks installed.
WORK=$(mktemp -d "$TOOLS_DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export GOFLAGS='' GOWORK=off

# have BINARY MARKER: BINARY exists and its embedded build information
# contains MARKER (a module version or a -X version stamp).
have() {
	[[ -x $1 ]] && go version -m "$1" 2>/dev/null | grep -qF -- "$2"
}

install_bin() {
	mv -f "$WORK/$1" "$BIN/$1"
	log "installed $BIN/$1"
}

apt_install() {
	local missing=()
	local pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return 0
	if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
		die "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
	fi
	log "installing Debian packages: ${missing[*]}"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

if command -v dpkg-query >/dev/null; then
	apt_install busybox util-linux
fi

if ! have "$BIN/critest" "$VERSION_PKG=$CRI_TOOLS_VERSION"; then
	log "building critest $CRI_TOOLS_VERSION (a few minutes on a fresh machine)"
	src=$(go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[[ -n $src && -d $src ]] || die "go mod download sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION gave no directory"
	pinned=$(sed -n 's|^[[:space:]]*github.com/onsi/ginkgo/v2 \(v[^ ]*\).*|\1|p' "$src/go.mod")
	[[ $pinned == "$GINKGO_VERSION" ]] ||
		die "cri-tools $CRI_TOOLS_VERSION pins ginkgo ${pinned:-?}, this script $GINKGO_VERSION: update GINKGO_VERSION"
	# The module cache is read-only; -o writes the binary elsewhere. The -X
	# stamp makes `critest -version` (and the check above) see the version.
	(cd "$src" && go test -c -ldflags "-X $VERSION_PKG=$CRI_TOOLS_VERSION" -o "$WORK/critest" ./cmd/critest) >&2
	install_bin critest
fi

if ! have "$BIN/crictl" "$VERSION_PKG=$CRI_TOOLS_VERSION"; then
	log "building crictl $CRI_TOOLS_VERSION"
	GOBIN=$WORK go install -ldflags "-X $VERSION_PKG=$CRI_TOOLS_VERSION" "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION" >&2
	install_bin crictl
fi

if ! have "$BIN/ginkgo" "$(printf 'mod\tgithub.com/onsi/ginkgo/v2\t%s' "$GINKGO_VERSION")"; then
	log "building ginkgo $GINKGO_VERSION"
	GOBIN=$WORK go install "github.com/onsi/ginkgo/v2/ginkgo@$GINKGO_VERSION" >&2
	install_bin ginkgo
fi

if ! have "$BIN/registry" "$(printf 'mod\tgithub.com/distribution/distribution/v3\t%s' "$REGISTRY_VERSION")"; then
	log "building registry $REGISTRY_VERSION (a few minutes on a fresh machine)"
	GOBIN=$WORK go install "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION" >&2
	install_bin registry
fi

echo "$BIN"
