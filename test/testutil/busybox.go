// Package testutil builds what berth's tests need from the host: a busybox
// root filesystem from Debian's dynamic busybox and its libraries.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// BusyboxPath is Debian's dynamic busybox (package busybox).
const BusyboxPath = "/bin/busybox"

var lddLine = regexp.MustCompile(`(/[^ ]+) \(0x`)

// BusyboxRootfs fills dir with a minimal root filesystem: busybox, the
// shared libraries it links (from ldd), every applet as a link in /bin, and
// /etc/passwd and /etc/group.
func BusyboxRootfs(dir string) error {
	out, err := exec.Command("ldd", BusyboxPath).Output()
	if err != nil {
		return fmt.Errorf("ldd %s (install Debian's busybox): %w", BusyboxPath, err)
	}
	files := []string{BusyboxPath}
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		files = append(files, m[1])
	}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			return err
		}
	}
	list, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return err
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		_ = os.Symlink("busybox", filepath.Join(dir, "bin", applet))
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "etc", "root", "var/run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	etc := map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		// www-data is also in a group of the image's own (for Merge tests).
		"group": "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nimage-group:x:50000:www-data\nnogroup:x:65534:\n",
	}
	for name, body := range etc {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
