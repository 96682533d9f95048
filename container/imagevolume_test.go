package container

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func imageMount(dest, image, sub string, readonly bool) *runtimeapi.Mount {
	return &runtimeapi.Mount{
		ContainerPath: dest, Readonly: readonly, ImageSubPath: sub,
		Image: &runtimeapi.ImageSpec{Image: image},
	}
}

// mountsUnder lists the host's mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

func (e *env) holds(key string) bool {
	e.images.mu.Lock()
	defer e.images.mu.Unlock()
	return e.images.users[key]
}

// TestImageVolumes mounts a two-layer image whole and a one-layer image's
// sub directory, read-only but executable, and checks the layers are held
// until the container is removed and nothing stays mounted after.
func TestImageVolumes(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	cfg := config("vols", "sleep", "60")
	cfg.Mounts = []*runtimeapi.Mount{
		imageMount("/mnt/data", "data", "", true),
		imageMount("/mnt/bb", "busybox", "bin", true),
	}
	c := e.run(p, cfg)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cat", "/mnt/data/etc/marker"}, "top\n"}, // the top layer wins
		{[]string{"cat", "/mnt/data/etc/base"}, "base layer\n"},
		{[]string{"cat", "/mnt/data/top"}, "top layer\n"},
		{[]string{"/mnt/bb/sh", "-c", "echo from the volume"}, "from the volume\n"}, // not noexec
	} {
		if out, code := e.exec(c.ID, tc.args...); code != 0 || out != tc.want {
			t.Errorf("%v: %q (exit %d), want %q", tc.args, out, code, tc.want)
		}
	}
	if out, code := e.exec(c.ID, "touch", "/mnt/data/new"); code == 0 {
		t.Errorf("writing into an image volume succeeded: %s", out)
	}
	if _, code := e.exec(c.ID, "ls", "/mnt/bb/bin"); code == 0 {
		t.Error("the sub path's parent is visible: image_sub_path was ignored")
	}

	got, err := e.mgr.Get(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := got.ContainerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if ref := rec.GetMounts()[0].GetImage().GetImageRef(); ref != "sha256:data" {
		t.Errorf("recorded image_ref %q, want the image ID", ref)
	}
	if cfg.GetMounts()[0].GetImage().GetImageRef() != "" {
		t.Error("Create wrote into the caller's config")
	}
	for i := range 2 {
		if !e.holds(VolumeKey(c.ID, i)) {
			t.Errorf("volume %d does not hold its image's layers", i)
		}
	}
	if n := len(mountsUnder(t, c.Dir)); n != 3 { // root and two volumes
		t.Errorf("%d mounts under the container's directory, want 3", n)
	}

	if err := e.mgr.Remove(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if e.holds(VolumeKey(c.ID, i)) {
			t.Errorf("volume %d still holds its image's layers after remove", i)
		}
	}
	if left := mountsUnder(t, c.Dir); len(left) != 0 {
		t.Errorf("mounts left after remove: %v", left)
	}
}

// TestImageVolumeRefused checks the image mounts Create must refuse, and
// that a refusal after the first volume is mounted leaves nothing behind.
func TestImageVolumeRefused(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	for _, tc := range []struct {
		name   string
		mounts []*runtimeapi.Mount
		want   error
	}{
		{"writable", []*runtimeapi.Mount{imageMount("/mnt/x", "data", "", false)}, errdefs.ErrInvalidArgument},
		{"missing sub path", []*runtimeapi.Mount{imageMount("/mnt/ok", "data", "", true), imageMount("/mnt/x", "data", "not-existing", true)}, errdefs.ErrInvalidArgument},
		{"sub path out of the image", []*runtimeapi.Mount{imageMount("/mnt/x", "data", "../..", true)}, errdefs.ErrInvalidArgument},
		{"unknown image", []*runtimeapi.Mount{imageMount("/mnt/x", "nope", "", true)}, errdefs.ErrNotFound},
	} {
		cfg := config("refused", "true")
		cfg.Mounts = tc.mounts
		if _, err := e.mgr.Create(context.Background(), p.ID, cfg); !errors.Is(err, tc.want) {
			t.Errorf("%s: Create = %v, want %v", tc.name, err, tc.want)
		}
		if n := len(e.mgr.List()); n != 0 {
			t.Fatalf("%s: %d containers left by a refused create", tc.name, n)
		}
		e.images.mu.Lock()
		held := len(e.images.users)
		e.images.mu.Unlock()
		if held != 0 {
			t.Errorf("%s: image layers held after a refused create: %v", tc.name, e.images.users)
		}
		if left := mountsUnder(t, e.root); len(left) != 0 {
			t.Errorf("%s: mounts left after a refused create: %v", tc.name, left)
		}
	}
}

// TestImageVolumeCrashMidCreate restarts the manager over a create that
// had mounted its image volume when the daemon died: Recover must unmount
// it and release the layers.
func TestImageVolumeCrashMidCreate(t *testing.T) {
	e := newEnv(t)
	p := e.pod(true)
	cfg := config("crash", "true")
	cfg.Mounts = []*runtimeapi.Mount{imageMount("/mnt/data", "data", "", true)}
	id, err := e.mgr.Create(context.Background(), p.ID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.mgr.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	// As if the daemon had died before the create finished.
	c.State = StateCreating
	if err := e.mgr.save(c); err != nil {
		t.Fatal(err)
	}
	e.open()
	if _, err := e.mgr.Get(id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("interrupted create still recorded: %v", err)
	}
	if e.holds(VolumeKey(id, 0)) {
		t.Error("image volume layers still held after recovery")
	}
	if left := mountsUnder(t, c.Dir); len(left) != 0 {
		t.Errorf("mounts left after recovery: %v", left)
	}
}

// TestImageVolumeUserNamespace mounts an image volume into a pod with a
// user namespace: the image's root-owned files appear owned by root inside,
// as the root's do, and nothing stays mounted after remove.
func TestImageVolumeUserNamespace(t *testing.T) {
	e := newEnv(t)
	e.letUsernsIn()
	p := e.usernsPod(runtimeapi.NamespaceMode_CONTAINER)
	cfg := config("uvol", "sleep", "60")
	cfg.Mounts = []*runtimeapi.Mount{imageMount("/mnt/data", "data", "etc", true)}
	c := e.run(p, cfg)
	if out, code := e.exec(c.ID, "stat", "-c", "%u:%g", "/mnt/data/marker"); code != 0 || strings.TrimSpace(out) != "0:0" {
		t.Errorf("image volume file owner inside: %q (exit %d), want 0:0", out, code)
	}
	if out, code := e.exec(c.ID, "cat", "/mnt/data/base"); code != 0 || out != "base layer\n" {
		t.Errorf("read the image volume: %q (exit %d)", out, code)
	}
	if err := e.mgr.Remove(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	if left := mountsUnder(t, c.Dir); len(left) != 0 {
		t.Errorf("mounts left after remove: %v", left)
	}
}
