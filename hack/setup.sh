#!/usr/bin/env bash
# Prepares a fresh Debian machine for building and testing berth: the Debian
# packages berth and its tests need, and the Go-built test tools (cached in
# $BERTH_TOOLS/bin). Idempotent: a second run installs nothing.
set -euo pipefail

cd "$(dirname "$0")/.."
BERTH_TOOLS=${BERTH_TOOLS:-/var/cache/berth-tools}
export BERTH_TOOLS

if [ "$(id -u)" -ne 0 ]; then
	echo "setup: berth's build and tests need root" >&2
	exit 1
fi

# libseccomp-dev: libcontainer's seccomp support (cgo, -tags seccomp).
# iptables, iproute2: the portmap/bridge CNI plugins and the leak checks.
# busybox: the userland of the critest busybox image.
# The shell scripts' linter comes from the package of the same name.
packages=(libseccomp-dev iptables iproute2 busybox shellcheck)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$BERTH_TOOLS/bin"
if [ ! -x "$BERTH_TOOLS/bin/staticcheck" ]; then
	echo "setup: installing staticcheck"
	GOBIN="$BERTH_TOOLS/bin" go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

# crictl, critest, ginkgo and the OCI registry used by the tests.
hack/critest-tools.sh >/dev/null
