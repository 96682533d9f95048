package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakePlugins makes executable stand-ins named like plugins: Ready only
// looks them up (STATUS is exercised with the real plugins in sandbox/).
func fakePlugins(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		// Answers STATUS (and anything else) with success.
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Item 3: with no config berth writes its default (bridge berth0, hairpin,
// ipMasq, host-local 10.88.0.0/16, portmap) and uses it.
func TestDefaultWrittenWhenNoConfig(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "net.d") // does not exist yet
	m := New(Options{ConfDir: conf, BinDirs: []string{fakePlugins(t, "bridge", "host-local", "portmap", "loopback")}})
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	data, err := os.ReadFile(filepath.Join(conf, DefaultFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Name    string
		Plugins []map[string]any
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	bridge, portmap := doc.Plugins[0], doc.Plugins[1]
	ipam, _ := bridge["ipam"].(map[string]any)
	if doc.Name != "berth" || bridge["type"] != "bridge" || bridge["bridge"] != "berth0" || bridge["hairpinMode"] != true ||
		bridge["ipMasq"] != true || bridge["isGateway"] != true || ipam["type"] != "host-local" ||
		!strings.Contains(string(data), `"subnet": "10.88.0.0/16"`) || portmap["type"] != "portmap" {
		t.Errorf("default conflist:\n%s", data)
	}
}

// Item 3: Status reasons, and config files are read again when they change.
func TestReadyFollowsConfig(t *testing.T) {
	conf := t.TempDir()
	bins := fakePlugins(t, "bridge", "host-local", "loopback")
	m := New(Options{ConfDir: conf, BinDirs: []string{bins}})
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-mine.conflist", `{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"bridge"},{"type":"berth-missing"}]}`)
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "berth-missing") {
		t.Errorf("Ready with a missing plugin = %v", err)
	}
	write("20-mine.conflist", `{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"bridge"}]}`)
	if err := m.Ready(); err != nil {
		t.Errorf("Ready after the file was fixed = %v", err)
	}
	write("20-mine.conflist", `{not json`)
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "no usable CNI config") {
		t.Errorf("Ready with a broken file = %v", err)
	}
	if _, err := os.Stat(filepath.Join(conf, DefaultFile)); err == nil {
		t.Error("default written although a config file exists")
	}
}

// An operator's file wins over berth's default, whatever their names.
func TestOperatorConfigWinsOverDefault(t *testing.T) {
	conf := t.TempDir()
	if _, err := writeDefault(conf, DefaultNetwork()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "99-addon.conflist"), []byte(`{"cniVersion":"1.0.0","name":"addon","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m := New(Options{ConfDir: conf})
	list, err := m.load()
	if err != nil || list.Name != "addon" {
		t.Fatalf("load = %v, %v; want the add-on's network", list, err)
	}
}

func TestOwnBinDirs(t *testing.T) {
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	got := OwnBinDirs([]string{"/opt/cni/bin"})
	want := []string{"/opt/cni/bin", filepath.Join(filepath.Dir(exe), "cni")}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("OwnBinDirs = %v, want %v", got, want)
	}
}

func TestUsableNetNS(t *testing.T) {
	f := filepath.Join(t.TempDir(), "net")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"":                  "",
		"/nonexistent/net":  "",
		f:                   "", // a leftover empty file, not a namespace
		"/proc/self/ns/net": "/proc/self/ns/net",
	} {
		if got := usableNetNS(path); got != want {
			t.Errorf("usableNetNS(%q) = %q, want %q", path, got, want)
		}
	}
}
