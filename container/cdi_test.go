package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cdiSpec is a CDI spec of one vendor device: /dev/null under another name,
// an environment variable, and (for the whole vendor spec) another variable
// and a read-only mount of share.
const cdiSpec = `{
  "cdiVersion": "0.6.0",
  "kind": "berth.test/device",
  "devices": [{
    "name": "null0",
    "containerEdits": {
      "deviceNodes": [{"path": "/dev/berth-null", "hostPath": "/dev/null"}],
      "env": ["BERTH_DEV=null0"]
    }
  }],
  "containerEdits": {
    "env": ["BERTH_VENDOR=1"],
    "mounts": [{"hostPath": %q, "containerPath": "/cdi-share", "options": ["ro", "bind"]}]
  }
}`

// useCDI points the env's manager at a fresh spec directory holding
// cdiSpec, and returns the directory shared by the spec's mount.
func (e *env) useCDI() string {
	e.t.Helper()
	dir, share := filepath.Join(e.base, "cdi"), filepath.Join(e.base, "cdi-share")
	for _, d := range []string{dir, share} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(share, "f"), []byte("shared\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "berth-test.json"), fmt.Appendf(nil, cdiSpec, share), 0o644); err != nil {
		e.t.Fatal(err)
	}
	reg, err := newCDIRegistry([]string{dir})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mgr.cdi = reg
	return share
}

// TestCDIDevices: a device named in cdi_devices, or by a cdi.k8s.io/
// annotation, reaches the container with its node (usable: the device
// cgroup allows it), environment and mount; an unknown or malformed device
// is InvalidArgument naming it, and leaves nothing behind.
func TestCDIDevices(t *testing.T) {
	e := newEnv(t)
	e.useCDI()
	p := e.pod(true)

	byField := config("cdi-field", "sleep", "1000")
	byField.CDIDevices = []*runtimeapi.CDIDevice{{Name: "berth.test/device=null0"}}
	byAnnotation := config("cdi-annotation", "sleep", "1000")
	byAnnotation.Annotations = map[string]string{"cdi.k8s.io/berth-test": "berth.test/device=null0"}
	for _, cfg := range []*runtimeapi.ContainerConfig{byField, byAnnotation} {
		c := e.run(p, cfg)
		if out, code := e.exec(c.ID, "sh", "-c", "test -c /dev/berth-null && echo x > /dev/berth-null && echo $BERTH_DEV $BERTH_VENDOR && cat /cdi-share/f"); code != 0 || out != "null0 1\nshared\n" {
			t.Fatalf("%s: device, env or mount missing: %d %q", cfg.GetMetadata().GetName(), code, out)
		}
		if _, code := e.exec(c.ID, "sh", "-c", "echo y > /cdi-share/g"); code == 0 {
			t.Fatalf("%s: the spec's read-only mount is writable", cfg.GetMetadata().GetName())
		}
	}

	for _, name := range []string{"berth.test/device=nope", "not-a-cdi-name"} {
		bad := config("cdi-bad", "true")
		bad.CDIDevices = []*runtimeapi.CDIDevice{{Name: name}}
		_, err := e.mgr.Create(context.Background(), p.ID, bad)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), name) {
			t.Fatalf("device %q: %v, want InvalidArgument naming it", name, err)
		}
	}
	// The failed creates left no container and freed the name.
	if n := len(e.mgr.List()); n != 2 {
		t.Fatalf("%d containers, want the 2 started", n)
	}
	if _, err := e.mgr.Create(context.Background(), p.ID, config("cdi-bad", "true")); err != nil {
		t.Fatalf("name of a failed create still taken: %v", err)
	}
}
