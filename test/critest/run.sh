#!/usr/bin/env bash
# Conformance harness: runs cri-tools' critest v1.37.0 against a freshly built
# berth and checks the result against test/critest/expected-pass.txt.
#
# Everything it starts (a local OCI registry holding the test images, the
# berth daemon, critest) lives in one temporary directory and is stopped by
# PID and removed on exit, whatever happens. Needs root. See README.md.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: test/critest/run.sh [--parallel N] [--websocket] [--benchmark] [--focus REGEX] [--timeout DURATION] [--artifacts DIR]

  --parallel N       run N ginkgo processes (through the ginkgo CLI); default 1
  --websocket        use websocket instead of SPDY for exec, attach and port-forward
  --benchmark        run critest's benchmark specs instead of the validation suite and
                     print each operation's median and 90th percentile
  --focus REGEX      run only the specs matching REGEX; expected specs left out are not counted
  --timeout DURATION give up on critest after DURATION (ginkgo syntax, e.g. 20m); default 20m
  --artifacts DIR    copy the berth, registry and critest logs and the report to DIR
EOF
}

log() { echo "critest-harness: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

PARALLEL=1
WEBSOCKET=0
BENCHMARK=0
FOCUS=
TIMEOUT=20m
ARTIFACTS=
while (($#)); do
	case $1 in
	--parallel)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--parallel needs a positive number"
		PARALLEL=$2
		shift 2
		;;
	--websocket)
		WEBSOCKET=1
		shift
		;;
	--benchmark)
		BENCHMARK=1
		shift
		;;
	--focus)
		[[ -n ${2:-} ]] || die "--focus needs a regex"
		FOCUS=$2
		shift 2
		;;
	--timeout)
		[[ ${2:-} =~ ^[0-9]+[smh]$ ]] || die "--timeout needs a duration like 900s, 20m or 1h"
		TIMEOUT=$2
		shift 2
		;;
	--artifacts)
		[[ -n ${2:-} ]] || die "--artifacts needs a directory"
		ARTIFACTS=$2
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
done

[[ $EUID -eq 0 ]] || die "must run as root (berth creates namespaces, mounts and cgroups)"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/test/critest
cd "$REPO"

# State for cleanup(); every PID here is a child this script started.
TMP=
BERTH_PID=
REGISTRY_PID=
CRITEST_PID=
SHM_BEFORE=
CLEANED=0

# stop_pid PID NAME GRACE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_pid() {
	local pid=$1 name=$2 grace=$3 i
	[[ -n $pid ]] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) ignored SIGTERM for ${grace}s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
}

# leftover_pids: processes still using the temporary directory (as root,
# working directory or in their command line) after berth has stopped:
# container processes and monitors berth failed to clean up. Found by what
# they hold, never by name; this script and its subshells are excluded.
leftover_pids() {
	local d pid root cwd stat ppid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
		# Our own children (tee, subshells) are not leftovers: the 4th field
		# after the ")" closing the command name is the parent PID.
		stat=$(cat "$d/stat" 2>/dev/null) || continue
		stat=${stat##*) }
		read -r _ ppid _ <<<"$stat"
		[[ $ppid == "$$" ]] && continue
		root=$(readlink "$d/root" 2>/dev/null) || continue
		cwd=$(readlink "$d/cwd" 2>/dev/null) || cwd=
		if [[ $root == "$TMP"/* || $cwd == "$TMP"/* ]] ||
			tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "$TMP/"; then
			echo "$pid"
		fi
	done
}

# tmp_mounts: mount points under the temporary directory, deepest first.
tmp_mounts() {
	awk -v p="$TMP/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# Shared memory segments critest's HostIpc specs create on the host with
# ipcmk and never remove: new ids since the start, 1 MiB, not attached.
remove_critest_shm() {
	local id
	[[ -r /proc/sysvipc/shm ]] || return 0
	while read -r id; do
		[[ " $SHM_BEFORE " == *" $id "* ]] && continue
		ipcrm -m "$id" 2>/dev/null || true
	done < <(awk 'NR > 1 && $4 == 1048576 && $7 == 0 { print $2 }' /proc/sysvipc/shm)
}

# cgroup_dirs: every cgroup directory under berth's default pod parent, in
# every hierarchy; compared before and after the suite.
cgroup_dirs() {
	# find fails where berth never made its parent cgroup: no directories.
	{ find /sys/fs/cgroup/*/berth /sys/fs/cgroup/berth -mindepth 1 -type d 2>/dev/null || true; } | sort
}

# ip_allocations: host-local's allocation records (one file per IP), where
# berth's default network keeps them: host-local's usual directory.
ip_allocations() {
	{ find /var/lib/cni/networks -mindepth 2 -maxdepth 2 -type f ! -name 'last_reserved_ip*' ! -name lock 2>/dev/null || true; } | sort
}

# check_leaks: after the suite, nothing critest made may be left: pods and
# containers (asked of berth while it runs), then, once berth has stopped,
# processes, mounts (pinned namespaces, overlay roots, /dev/shm), veths on
# the pod bridge, cgroups and IP allocations. Prints what it finds.
LEAKS=()
check_leaks_running() {
	local out
	# stderr only on failure: crictl warns there about its missing config
	# file on every run.
	out=$("$TOOLS/crictl" --runtime-endpoint "unix://$SOCK" --timeout 30s pods -q 2>/dev/null) || out="crictl pods failed"
	[[ -n $out ]] && LEAKS+=("pods left: $(echo "$out" | tr '\n' ' ')")
	out=$("$TOOLS/crictl" --runtime-endpoint "unix://$SOCK" --timeout 30s ps -a -q 2>/dev/null) || out="crictl ps failed"
	[[ -n $out ]] && LEAKS+=("containers left: $(echo "$out" | tr '\n' ' ')")
	return 0
}
check_leaks_stopped() {
	local out
	# Each probe may find nothing to look at (no bridge, no IPAM directory):
	# with pipefail that is a failure, which must not end the script.
	out=$(leftover_pids | tr '\n' ' ') || true
	[[ -n ${out// /} ]] && LEAKS+=("processes left: $out")
	out=$(tmp_mounts) || true
	[[ -n $out ]] && LEAKS+=("mounts left: $(echo "$out" | wc -l) under $TMP")
	out=$(ip -o link show master berth0 2>/dev/null | awk -F': ' '{print $2}' | tr '\n' ' ') || true
	[[ -n ${out// /} ]] && LEAKS+=("veths left on berth0: $out")
	out=$(comm -13 <(echo "$CGROUPS_BEFORE") <(cgroup_dirs) | head -5) || true
	[[ -n $out ]] && LEAKS+=("cgroups left: $(echo "$out" | tr '\n' ' ')")
	out=$(comm -13 <(echo "$IPS_BEFORE") <(ip_allocations) | head -5) || true
	[[ -n $out ]] && LEAKS+=("IP allocations left: $(echo "$out" | tr '\n' ' ')")
	return 0
}

cleanup() {
	((CLEANED)) && return 0
	CLEANED=1
	set +e
	stop_pid "$CRITEST_PID" critest 10
	stop_pid "$BERTH_PID" berth 30
	stop_pid "$REGISTRY_PID" registry 10
	remove_critest_shm
	if [[ -n $TMP && -d $TMP ]]; then
		local pids m tries
		pids=$(leftover_pids | tr '\n' ' ')
		if [[ -n ${pids// /} ]]; then
			log "warning: processes left behind under $TMP, killing: $pids"
			# shellcheck disable=SC2086 # one PID per word
			kill -KILL $pids 2>/dev/null
			sleep 0.5
		fi
		for ((tries = 0; tries < 5; tries++)); do
			m=$(tmp_mounts)
			[[ -z $m ]] && break
			((tries == 0)) && log "warning: mounts left under $TMP, unmounting: $(echo "$m" | wc -l)"
			while read -r m; do
				umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
			done <<<"$m"
		done
		# --one-file-system: never follow a mount we failed to remove into
		# a host directory bind-mounted there.
		rm -rf --one-file-system "$TMP" || log "warning: could not remove $TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "installing tools"
TOOLS=$(hack/critest-tools.sh)

log "building berth (make build)"
make --no-print-directory build >&2 || die "make build failed"
[[ -x bin/shim ]] || die "make build did not produce bin/shim"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-critest.XXXXXX")
# mktemp makes it 0700; berth's root is beneath it, and a container in a pod
# user namespace (its root is not the host's) must be able to reach its rootfs.
chmod 711 "$TMP"
CGROUPS_BEFORE=$(cgroup_dirs)
IPS_BEFORE=$(ip_allocations)
BRIDGE_EXISTED=0
ip link show berth0 >/dev/null 2>&1 && BRIDGE_EXISTED=1
# berth's default pod cgroup parent, made on first use.
POD_PARENTS_BEFORE=$(ls -d /sys/fs/cgroup/*/berth /sys/fs/cgroup/berth 2>/dev/null || true)
mkdir -p "$TMP/registry" "$TMP/critest-tmp"
SHM_BEFORE=$(awk 'NR > 1 { print $2 }' /proc/sysvipc/shm 2>/dev/null | tr '\n' ' ')

# The report checker is built first so a compile error costs nothing.
go build -o "$TMP/report" ./test/critest/report

# --- registry ---------------------------------------------------------------
# Port 0: the registry picks a free port and logs it; no race with others.
cat >"$TMP/registry.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
EOF
# OTEL_*: distribution exports traces over OTLP by default; there is no collector.
OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
	"$TOOLS/registry" serve "$TMP/registry.yml" >"$TMP/registry.log" 2>&1 &
REGISTRY_PID=$!
REGISTRY=
for ((i = 0; i < 100; i++)); do
	kill -0 "$REGISTRY_PID" 2>/dev/null || {
		cat "$TMP/registry.log" >&2
		die "registry exited"
	}
	REGISTRY=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$TMP/registry.log" | head -n1 | sed 's/listening on //') || true
	[[ -n $REGISTRY ]] && break
	sleep 0.1
done
[[ -n $REGISTRY ]] || die "registry did not report its address within 10s"
log "registry on $REGISTRY (pid $REGISTRY_PID)"

log "pushing test images"
go run ./hack/testimages -registry "$REGISTRY" >"$TMP/testimages.log" || {
	cat "$TMP/testimages.log" >&2
	die "pushing test images failed"
}

# --- berth -------------------------------------------------------------------
# critest pulls from these hosts only (cri-tools v1.37.0 pkg/validate and
# pkg/framework): registry.k8s.io (e2e-test-images, pause), k8s.gcr.io
# (pause) and gcr.io (k8s-staging-cri-tools).
{
	echo "# Written by test/critest/run.sh for one conformance run."
	# A CNI directory of the run's own: berth writes its default network
	# there, and the machine's /etc/cni/net.d is left alone.
	printf '[cni]\nconf_dir = "%s"\n' "$TMP/net.d"
	# NRI on a socket of the run's own: critest's NRI specs connect to it
	# as plugins. Its synchronisation specs hold a plugin's Synchronize open
	# for 2 s on purpose, which NRI's default request timeout (2 s, as in
	# containerd) would cut off, dropping the plugin.
	printf '\n[nri]\nenable = true\nsocket_path = "%s"\nplugin_request_timeout = "5s"\n' "$TMP/nri.sock"
	for host in registry.k8s.io k8s.gcr.io gcr.io; do
		printf '\n[registries."%s"]\nmirrors = ["http://%s"]\n' "$host" "$REGISTRY"
	done
} >"$TMP/config.toml"

SOCK=$TMP/berth.sock
bin/shim serve --config "$TMP/config.toml" --socket "$SOCK" --root "$TMP/root" --state "$TMP/state" \
	--log-level debug >"$TMP/berth.log" 2>&1 &
BERTH_PID=$!
for ((i = 0; i < 300; i++)); do
	kill -0 "$BERTH_PID" 2>/dev/null || {
		tail -n 50 "$TMP/berth.log" >&2
		die "berth exited during startup"
	}
	if [[ -S $SOCK ]] && "$TOOLS/crictl" --runtime-endpoint "unix://$SOCK" --timeout 2s version >/dev/null 2>&1; then
		break
	fi
	sleep 0.1
done
[[ -S $SOCK ]] || {
	tail -n 50 "$TMP/berth.log" >&2
	die "berth did not create $SOCK within 30s"
}
log "berth up (pid $BERTH_PID), log $TMP/berth.log"

for port in 12000 12001 12002 12003; do
	if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		log "warning: host port $port is in use; critest's port-mapping specs need it free"
	fi
done

# --- critest -----------------------------------------------------------------
skips=()
while IFS= read -r line || [[ -n $line ]]; do
	line=$(sed -E 's/(^|[[:space:]]+)#.*$//; s/[[:space:]]+$//' <<<"$line")
	[[ -n $line ]] && skips+=("$line")
done <"$HERE/skip.txt"

suite_args=(-runtime-endpoint "unix://$SOCK" -image-endpoint "unix://$SOCK" -nri-socket "$TMP/nri.sock")
if ((WEBSOCKET)); then
	suite_args+=(-websocket-exec -websocket-attach -websocket-portforward)
fi
if ((BENCHMARK)); then
	# Sizes a 2-core machine runs in a few minutes; the images are the
	# local registry's, through the mirrors.
	e2e=registry.k8s.io/e2e-test-images
	cat >"$TMP/benchmark.yaml" <<EOF
containersNumber: 40
containersNumberParallel: 2
podsNumber: 40
podsNumberParallel: 2
imagesNumber: 10
imagesNumberParallel: 1
imagePullingBenchmarkImage: $e2e/busybox:1.29-2
imageListingBenchmarkImages: [$e2e/busybox:1.29-2, $e2e/nginx:1.14-2, $e2e/httpd:2.4.39-4]
EOF
	mkdir -p "$TMP/benchmark"
	suite_args+=(-benchmark -benchmarking-params-file "$TMP/benchmark.yaml" -benchmarking-output-dir "$TMP/benchmark")
fi
ginkgo_args=(--timeout="$TIMEOUT" --json-report="$TMP/report.json" --no-color)
for s in "${skips[@]}"; do
	ginkgo_args+=(--skip="$s")
done
[[ -n $FOCUS ]] && ginkgo_args+=(--focus="$FOCUS")

if ((PARALLEL > 1)); then
	# The ginkgo CLI runs precompiled suites only if the name ends in .test.
	ln -s "$TOOLS/critest" "$TMP/critest.test"
	cmd=("$TOOLS/ginkgo" --procs="$PARALLEL" "${ginkgo_args[@]}" "$TMP/critest.test" -- "${suite_args[@]}")
else
	# Run directly, the ginkgo flags take the -ginkgo. prefix.
	cmd=("$TOOLS/critest" "${suite_args[@]}" "${ginkgo_args[@]/#--/-ginkgo.}")
fi

# ginkgo stops itself at --timeout and still writes the report; the outer
# timeout is for a critest that hangs anyway. Spec temp files go under $TMP.
log "running critest (parallel $PARALLEL, timeout $TIMEOUT):$(printf ' %q' "${cmd[@]}")"
start=$SECONDS
case $TIMEOUT in
*s) limit=${TIMEOUT%s} ;;
*m) limit=$((${TIMEOUT%m} * 60)) ;;
*h) limit=$((${TIMEOUT%h} * 3600)) ;;
esac
TMPDIR=$TMP/critest-tmp timeout --kill-after=30s "$((limit + 120))" "${cmd[@]}" > >(tee "$TMP/critest.log") 2>&1 &
CRITEST_PID=$!
critest_rc=0
wait "$CRITEST_PID" || critest_rc=$?
CRITEST_PID=
log "critest exited with status $critest_rc after $((SECONDS - start))s"

# --- results -----------------------------------------------------------------
report_args=(-report "$TMP/report.json" -expected "$HERE/expected-pass.txt")
[[ -n $FOCUS ]] && report_args+=(-focused)
((BENCHMARK)) && report_args+=(-benchmark "$TMP/benchmark")
report_rc=0
report_out=$("$TMP/report" "${report_args[@]}" 2>&1) || report_rc=$?

check_leaks_running
stop_pid "$BERTH_PID" berth 30
BERTH_PID=
check_leaks_stopped
if ((${#LEAKS[@]} == 0)); then
	# The run created the pod bridge: with no pod left on it, it goes too.
	((BRIDGE_EXISTED)) || ip link del berth0 2>/dev/null || true
	# So does the pod cgroup parent it made, empty now.
	for dir in /sys/fs/cgroup/*/berth /sys/fs/cgroup/berth; do
		if [[ -d $dir ]] && ! grep -qxF "$dir" <<<"$POD_PARENTS_BEFORE"; then
			rmdir "$dir" 2>/dev/null || log "warning: could not remove $dir"
		fi
	done
	leak_out="leaks: none"
else
	leak_out=$(printf 'leak: %s\n' "${LEAKS[@]}")
	report_rc=1
fi

berth_tail=
if ((report_rc != 0)); then
	berth_tail=$(tail -n 60 "$TMP/berth.log")
fi
if [[ -n $ARTIFACTS ]]; then
	mkdir -p "$ARTIFACTS"
	cp -f "$TMP"/{berth.log,registry.log,critest.log,testimages.log,config.toml} "$ARTIFACTS"/ 2>/dev/null || true
	cp -f "$TMP/report.json" "$ARTIFACTS"/ 2>/dev/null || true
	log "artifacts in $ARTIFACTS"
fi

# Stop and remove everything now, so that the summary is the last output.
cleanup

if ((report_rc != 0)); then
	echo "--- last lines of berth's log ---"
	echo "$berth_tail"
	echo "---"
fi
echo "$leak_out"
echo "$report_out"
exit $((report_rc != 0))
