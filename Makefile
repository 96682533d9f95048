# berth — a Kubernetes CRI runtime.
# `make run` starts the daemon with embedded defaults; `make test` runs every test.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# seccomp: libcontainer's seccomp support (cgo). nri_no_wasm: NRI plugins
# run as processes or connect to the socket; WebAssembly ones would add a
# wasm runtime to the daemon binary, which every exec re-executes.
TAGS      := seccomp,nri_no_wasm
GOFLAGS_BUILD := -tags $(TAGS) -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
export CGO_ENABLED := 1
# Where test tools (crictl, critest, ginkgo, registry, staticcheck) are cached.
BERTH_TOOLS ?= /var/cache/berth-tools
export BERTH_TOOLS
export PATH := $(BERTH_TOOLS)/bin:$(PATH)

CNI_PLUGINS_VERSION := v1.10.0
CNI_PLUGINS := main/bridge main/loopback ipam/host-local meta/portmap

.PHONY: all build cni-plugins run test unit integration kubelet critest bench lint setup clean

all: build

build: $(BIN)/shim $(BIN)/berth-runc $(BIN)/berth-monitor cni-plugins

$(BIN)/shim: FORCE
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/shim

# The libcontainer helper: starts containers, runs exec'd processes.
$(BIN)/berth-runc: FORCE
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/berth-runc

# The per-container monitor: a binary of its own, small and static (no cgo,
# no libcontainer), beside the shim.
$(BIN)/berth-monitor: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $@ ./cmd/monitor

# The reference CNI plugins, built from the module berth depends on, into
# bin/cni: the daemon searches the cni/ directory beside its binary last.
cni-plugins:
	@mkdir -p $(BIN)/cni
	GOBIN=$(abspath $(BIN)/cni) $(GO) install -trimpath $(addprefix github.com/containernetworking/plugins/plugins/,$(addsuffix @$(CNI_PLUGINS_VERSION),$(CNI_PLUGINS)))

run: build
	$(BIN)/shim serve

# Machine set-up a fresh clone needs: packages and test tools. Idempotent.
setup:
	hack/setup.sh

test: setup build lint unit integration kubelet critest

# Every package's own tests; the ones that need real namespaces run as root.
unit: build
	$(GO) test -tags $(TAGS) -count=1 $$($(GO) list ./... | grep -v /test/integration)

integration: build
	BERTH_REQUIRE_TOOLS=1 $(GO) test -tags $(TAGS) -count=1 -timeout 20m -run Integration ./test/integration/...

# A real kubelet (built once by hack/kubelet.sh, ~8 min cold) running static
# pods on bin/shim; -v shows its manifest → Running latencies.
kubelet: build
	hack/kubelet.sh >/dev/null
	BERTH_REQUIRE_TOOLS=1 $(GO) test -tags $(TAGS) -count=1 -timeout 20m -v -run '^TestKubelet$$' ./test/integration/...

# The whole suite twice: two ginkgo processes with exec, attach and
# port-forward over WebSocket, then serially over SPDY (its summary is the
# last word of `make test`). About 90 s and 150 s here.
critest: build
	test/critest/run.sh --parallel 2 --websocket
	test/critest/run.sh

# Includes kubelet on berth against kubelet on containerd, both built once,
# and critest's own benchmark specs.
bench: setup build
	hack/kubelet.sh >/dev/null
	hack/containerd.sh >/dev/null
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem ./...
	test/critest/run.sh --benchmark

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet -tags $(TAGS) ./...
	staticcheck -tags $(TAGS) ./...
	shellcheck $$(git ls-files '*.sh') .ci/run

clean:
	rm -rf $(BIN)

FORCE:
