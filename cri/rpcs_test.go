package cri

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// implemented lists the RPCs berth serves. notYet lists those that answer
// Unimplemented for now. Every RPC of the CRI version in go.mod must be in
// exactly one of them, so a cri-api upgrade cannot add a silent gap.
var implemented = []string{
	"Version", "Status", "RuntimeConfig", "UpdateRuntimeConfig",
	// Pods (sandbox issue).
	"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus", "ListPodSandbox",
	"StreamPodSandboxes", "PodSandboxStats", "ListPodSandboxStats", "StreamPodSandboxStats",
	"UpdatePodSandboxResources",
	// Containers (containers issue).
	"CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "ListContainers",
	"StreamContainers", "ContainerStatus", "UpdateContainerResources", "ReopenContainerLog",
	"ExecSync", "ContainerStats", "ListContainerStats", "StreamContainerStats", "GetContainerEvents",
	// Images (images issue).
	"ListImages", "StreamImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo",
	// Streaming (streaming issue).
	"Exec", "Attach", "PortForward",
	// cAdvisor-style metrics (kubelet's PodAndContainerStatsFromCRI gate).
	"ListMetricDescriptors", "ListPodSandboxMetrics", "StreamPodSandboxMetrics",
}

var notYet = []string{
	// Pods (sandbox issue): pod checkpoint/restore.
	"CheckpointPod", "RestorePod",
	// Containers: checkpoints (CRIU is not on this machine).
	"CheckpointContainer",
}

func criMethods() []string {
	var names []string
	for _, t := range []reflect.Type{
		reflect.TypeFor[runtimeapi.RuntimeServiceServer](),
		reflect.TypeFor[runtimeapi.ImageServiceServer](),
	} {
		for m := range t.Methods() {
			if !strings.HasPrefix(m.Name, "mustEmbed") {
				names = append(names, m.Name)
			}
		}
	}
	return names
}

// serverMethods returns the methods declared on *Server in this package's
// non-test sources: those are the RPCs that do not fall through to the
// embedded Unimplemented servers.
func serverMethods(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || len(fn.Recv.List) != 1 {
				continue
			}
			if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok {
				if id, ok := star.X.(*ast.Ident); ok && id.Name == "Server" {
					out[fn.Name.Name] = true
				}
			}
		}
	}
	return out
}

func TestEveryRPCIsAccountedFor(t *testing.T) {
	all := criMethods()
	if len(all) != 43 {
		t.Errorf("cri-api declares %d RPCs; this list was written for 43: review the new ones", len(all))
	}
	declared := serverMethods(t)
	for _, m := range all {
		in, out := slices.Contains(implemented, m), slices.Contains(notYet, m)
		switch {
		case in && out:
			t.Errorf("%s is listed both as implemented and not yet", m)
		case !in && !out:
			t.Errorf("%s is new in cri-api: implement it or list it in notYet", m)
		case in && !declared[m]:
			t.Errorf("%s is listed as implemented but *Server does not declare it", m)
		case out && declared[m]:
			t.Errorf("%s is declared on *Server: move it to implemented", m)
		}
	}
}
