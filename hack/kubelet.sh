#!/usr/bin/env bash
# Builds kubelet from the Kubernetes module on the Go module proxy into
# ${BERTH_TOOLS:-/var/cache/berth-tools}/bin/kubelet and prints its path on
# stdout (everything else goes to stderr).
#
# `go install k8s.io/kubernetes/cmd/kubelet@vX` is refused: the module's
# go.mod replaces its k8s.io/* staging modules with local directories. So the
# build happens in a scratch module that requires k8s.io/kubernetes and
# replaces each of those staging modules with its published v0.X release,
# read from the replace directives of the very go.mod being built.
#
# Cold this takes about 8 minutes on 2 cores; the binary is cached and a
# second run only checks its embedded version.
set -euo pipefail

KUBERNETES_VERSION=${KUBERNETES_VERSION:-v1.37.2}
STAGING_VERSION=v0.${KUBERNETES_VERSION#v1.}

TOOLS_DIR=${BERTH_TOOLS:-/var/cache/berth-tools}
BIN=$TOOLS_DIR/bin
log() { echo "kubelet-build: $*" >&2; }

command -v go >/dev/null || {
	log "go is not on PATH"
	exit 1
}
mkdir -p "$BIN"
exec 9>"$TOOLS_DIR/.kubelet.lock"
flock 9

if [[ -x $BIN/kubelet ]] && go version -m "$BIN/kubelet" 2>/dev/null | grep -qE "(mod|dep)[[:space:]]+k8s.io/kubernetes[[:space:]]+$KUBERNETES_VERSION([[:space:]]|$)"; then
	echo "$BIN/kubelet"
	exit 0
fi

WORK=$(mktemp -d "$TOOLS_DIR/.kubelet.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export GOFLAGS='' GOWORK=off

log "building kubelet $KUBERNETES_VERSION (staging modules $STAGING_VERSION); takes minutes the first time"
gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[[ -f $gomod ]] || {
	log "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"
	exit 1
}

{
	echo "module berth.local/kubelet-build"
	echo
	# The go line and the godebug settings Kubernetes builds with.
	grep -E '^(go|godebug) ' "$gomod"
	echo
	echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
	echo
	# `k8s.io/foo => ./staging/src/k8s.io/foo`, inside or outside a block.
	sed -n 's#^\(replace[[:space:]]\+\)\?[[:space:]]*\(k8s.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#replace \2 => \2 '"$STAGING_VERSION"'#p' "$gomod"
} >go.mod
grep -q '^replace ' go.mod || {
	log "found no staging replace directives in $gomod"
	exit 1
}
# A tools file makes `go mod tidy` resolve the command's whole import graph.
cat >tools.go <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
EOF
go mod tidy >&2
major=${KUBERNETES_VERSION#v}
minor=${major#*.}
version_pkg=k8s.io/component-base/version
CGO_ENABLED=0 go build -trimpath -o kubelet \
	-ldflags "-s -w -X $version_pkg.gitVersion=$KUBERNETES_VERSION -X $version_pkg.gitMajor=${major%%.*} -X $version_pkg.gitMinor=${minor%%.*}" \
	k8s.io/kubernetes/cmd/kubelet >&2
mv -f kubelet "$BIN/kubelet"
log "installed $BIN/kubelet"
echo "$BIN/kubelet"
