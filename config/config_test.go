package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c := Default()
	if c.Socket != "/run/berth/berth.sock" || c.Root != "/var/lib/berth" || c.State != "/run/berth" {
		t.Fatalf("paths: %+v", c)
	}
	if c.ShutdownTimeout.Duration != 10*time.Second || c.Images.PullProgressTimeout.Duration != time.Minute {
		t.Fatalf("durations: %+v", c)
	}
	if c.Log.Level != "info" || c.Log.Format != "text" || c.Cgroup.Driver != "auto" {
		t.Fatalf("log/cgroup: %+v", c)
	}
	if len(c.CNI.BinDirs) != 1 || c.CNI.BinDirs[0] != "/opt/cni/bin" {
		t.Fatalf("cni: %+v", c.CNI)
	}
	if strings.Join(c.CDI.SpecDirs, ",") != "/etc/cdi,/var/run/cdi" {
		t.Fatalf("cdi: %+v", c.CDI)
	}
}

// Every key of the default file carries a comment, so the printed file is
// the documentation.
func TestDefaultFileCommentsEveryKey(t *testing.T) {
	lines := strings.Split(DefaultFile(), "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		// A key may share the comment of the key directly above it
		// (tls_cert/tls_key), as long as a comment starts the group.
		j := i - 1
		for j >= 0 && !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
			prev := strings.TrimSpace(lines[j])
			if prev == "" || strings.HasPrefix(prev, "[") {
				t.Errorf("line %d: key %q has no comment", i+1, l)
				break
			}
			j--
		}
	}
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOverlaysDefaults(t *testing.T) {
	p := write(t, `
root = "/tmp/x"
[log]
level = "debug"
[cni]
bin_dirs = ["/a", "/b"]
[registries."registry.k8s.io"]
mirrors = ["http://127.0.0.1:5000"]
`)
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/tmp/x" || c.Log.Level != "debug" || c.Log.Format != "text" || c.Socket != "/run/berth/berth.sock" {
		t.Fatalf("overlay: %+v", c)
	}
	if strings.Join(c.CNI.BinDirs, ",") != "/a,/b" {
		t.Fatalf("bin_dirs: %v", c.CNI.BinDirs)
	}
	if m := c.Registries["registry.k8s.io"].Mirrors; len(m) != 1 || m[0] != "http://127.0.0.1:5000" {
		t.Fatalf("mirrors: %v", c.Registries)
	}
}

func TestLoadMissingFile(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "none.toml"), false)
	if err != nil || c.Root != "/var/lib/berth" {
		t.Fatalf("missing default file: %v %+v", err, c)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.toml"), true); err == nil {
		t.Fatal("an explicitly named missing file must be an error")
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`sockt = "/x"`, "sockt"},
		{"[log]\nlevl = \"debug\"", "log.levl"},
		{"[log]\nlevel = \"loud\"", "log.level"},
		{"[log]\nformat = \"xml\"", "log.format"},
		{`root = "relative"`, "root"},
		{`shutdown_timeout = "soon"`, "shutdown_timeout"},
		{`shutdown_timeout = "-1s"`, "shutdown_timeout"},
		{"[cgroup]\ndriver = \"cgroupv3\"", "cgroup.driver"},
		{"[streaming]\nport = 70000", "streaming.port"},
		{"[streaming]\naddress = \"nowhere\"", "streaming.address"},
		{"[streaming]\ntls_cert = \"/c\"", "tls_key"},
		{"[images]\npull_progress_timeout = \"0s\"", "images.pull_progress_timeout"},
		{"[registries.\"r.io\"]\nmirrors = [\"ftp://x\"]", `registries."r.io".mirrors[0]`},
		{"[registries.\"r.io\"]\nmirors = []", `registries."r.io".mirors`},
		{"[cni]\nbin_dirs = [\"rel\"]", "cni.bin_dirs[0]"},
		{"[cdi]\nspec_dirs = [\"cdi\"]", "cdi.spec_dirs[0]"},
		{"[cdi]\nspec_dirs = [\"/a\", \"/a\"]", "cdi.spec_dirs[1]"},
		{"[cdi]\nspec_dirs = []", "cdi.spec_dirs"},
		{"this is not toml", "config"},
	} {
		_, err := Load(write(t, tc.body), true)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %q", tc.body, err, tc.want)
		}
	}
}

func TestCgroupDriver(t *testing.T) {
	c := Default()
	c.Cgroup.Driver = DriverSystemd
	if c.CgroupDriver() != DriverSystemd {
		t.Fatal("explicit driver not kept")
	}
	c.Cgroup.Driver = DriverAuto
	_, err := os.Stat("/run/systemd/system")
	want := DriverCgroupfs
	if err == nil {
		want = DriverSystemd
	}
	if got := c.CgroupDriver(); got != want {
		t.Fatalf("auto resolved to %s, want %s", got, want)
	}
}
