// Command testimages builds the container images critest v1.37.0 pulls on
// linux/amd64 and pushes them to a registry over plain HTTP, under their
// upstream repository paths without the host:
//
//	go run ./hack/testimages -registry 127.0.0.1:5000
//	go run ./hack/testimages -registry 127.0.0.1:5000 -only busybox,pause
//	go run ./hack/testimages -list
//
// Nothing is downloaded: the busybox userland is Debian's dynamic busybox
// package with the glibc libraries ldd reports, and every other program in
// the images (pause, nginx, httpd, nnp, pgrep, ipcs) is a small static Go
// program under hack/testimages/cmd, built into a temporary directory on
// each run. Builds are reproducible (fixed timestamps, sorted tar entries),
// so pushing twice yields the same digests and the second push uploads
// nothing. Run it from inside the berth repository; it needs `go` and the
// `busybox` Debian package.
package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const modulePath = "github.com/berth-runtime/berth"

func main() {
	registry := flag.String("registry", "", "registry host:port to push to, spoken to in plain HTTP (required unless -list)")
	only := flag.String("only", "", "comma-separated images to push: short names (busybox, pause, test-image-tag), repositories or repository:tag references; default all")
	list := flag.Bool("list", false, "print the images and what critest needs from each, then exit")
	busybox := flag.String("busybox", "", "dynamic busybox binary to use (default: the one installed by Debian's busybox package)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("testimages: ")

	if *list {
		fmt.Print(describe())
		return
	}
	if *registry == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	selected, err := selectSpecs(*only)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *registry, selected, *busybox); err != nil {
		log.Fatal(err)
	}
}

func selectSpecs(only string) ([]spec, error) {
	if only == "" {
		return specs, nil
	}
	var out []spec
	for item := range strings.SplitSeq(only, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		found := false
		for _, s := range specs {
			if s.matches(item) {
				found = true
				if !slices.ContainsFunc(out, func(o spec) bool { return o.repo == s.repo && slices.Equal(o.tags, s.tags) }) {
					out = append(out, s)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("-only %q: no such image (see -list)", item)
		}
	}
	return out, nil
}

func run(ctx context.Context, registry string, selected []spec, busybox string) error {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "berth-testimages-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	b := &builder{busyboxPath: busybox, binDir: tmp, bins: map[string]string{}}
	var helpers []string
	for _, s := range selected {
		for _, h := range s.helpers {
			if !slices.Contains(helpers, h) {
				helpers = append(helpers, h)
			}
		}
	}
	if err := b.buildHelpers(ctx, helpers); err != nil {
		return err
	}

	todo := map[name.Reference]remote.Taggable{}
	type pushed struct {
		ref    name.Reference
		digest v1.Hash
	}
	var report []pushed
	for _, s := range selected {
		img, err := s.build(b)
		if err != nil {
			return fmt.Errorf("%s: %w", s.repo, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return fmt.Errorf("%s: %w", s.repo, err)
		}
		for _, r := range s.refs() {
			// name.Insecure: the local registry speaks plain HTTP.
			ref, err := name.ParseReference(registry+"/"+r, name.Insecure, name.StrictValidation)
			if err != nil {
				return err
			}
			todo[ref] = img
			report = append(report, pushed{ref, digest})
		}
	}

	// One MultiWrite uploads each shared blob (the busybox layer) once.
	if err := remote.MultiWrite(todo, remote.WithContext(ctx), remote.WithJobs(4)); err != nil {
		return fmt.Errorf("push to %s: %w", registry, err)
	}
	for _, p := range report {
		fmt.Printf("%s %s\n", p.ref, p.digest)
	}
	log.Printf("pushed %d references to %s in %s", len(report), registry, time.Since(start).Round(time.Millisecond))
	return nil
}

// builder builds layers on demand and caches the shared ones.
type builder struct {
	busyboxPath string
	binDir      string
	bins        map[string]string // helper name -> built binary
	base        v1.Layer          // the busybox userland, shared by most images
	baseDesc    string
}

// moduleRoot finds the berth module containing the working directory, where
// `go build` resolves ./hack/testimages/cmd/....
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			if m := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(data); m != nil && string(m[1]) == modulePath {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the %s module: run from the berth repository", modulePath)
		}
		dir = parent
	}
}

// buildHelpers compiles the helper programs in one `go build` (so they are
// built in parallel) as static linux/amd64 binaries: the images have no
// libc of their own for them, except the busybox one.
func (b *builder) buildHelpers(ctx context.Context, helpers []string) error {
	if len(helpers) == 0 {
		return nil
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", b.binDir + "/"}
	for _, h := range helpers {
		args = append(args, "./hack/testimages/cmd/"+h)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	for _, h := range helpers {
		p := filepath.Join(b.binDir, h)
		if err := checkStatic(p); err != nil {
			return err
		}
		b.bins[h] = p
	}
	return nil
}

// checkStatic refuses a binary with an ELF interpreter: the helpers must
// run in images without a dynamic loader (pause is alone in its image).
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; helpers must be static (CGO_ENABLED=0)", p)
		}
	}
	return nil
}

func (b *builder) addHelper(l *layerBuilder, helper, dst string, mode int64) error {
	p, ok := b.bins[helper]
	if !ok {
		return fmt.Errorf("helper %s was not built (missing from the spec's helpers)", helper)
	}
	return l.copyFile(dst, p, mode)
}

// image assembles an OCI image from layers and a config.
func (b *builder) image(cfg v1.Config, layers []v1.Layer, createdBy []string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{Layer: l, History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "berth hack/testimages: " + createdBy[i],
		}}
	}
	return mutate.Append(img, adds...)
}

// busyboxBased puts extra layers on top of the busybox layer. PATH defaults
// to upstream busybox's.
func (b *builder) busyboxBased(cfg v1.Config, extra ...*layerBuilder) (v1.Image, error) {
	base, err := b.busyboxLayer()
	if err != nil {
		return nil, err
	}
	if len(cfg.Env) == 0 {
		cfg.Env = []string{imagePATH}
	}
	layers := []v1.Layer{base}
	desc := []string{b.baseDesc}
	for _, e := range extra {
		l, err := e.build()
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
		desc = append(desc, "image content")
	}
	return b.image(cfg, layers, desc)
}

// busyboxLayer builds (once) the userland layer: Debian's dynamic busybox,
// every applet as a hard link, the glibc libraries it needs, the users, and
// the pgrep and ipcs stand-ins.
//
// Why dynamic: busybox-static runs applets in-process without looking in
// /bin, so a masked /bin/ls would not make `sh -c ls` fail as critest's
// MaskedPaths spec expects. Why hard links (as the upstream image has):
// masking /bin/ls bind-mounts /dev/null onto the path; through a symlink it
// would land on /bin/busybox and take the shell with it.
func (b *builder) busyboxLayer() (v1.Layer, error) {
	if b.base != nil {
		return b.base, nil
	}
	bb := b.busyboxPath
	if bb == "" {
		var err error
		if bb, err = debianBusybox(); err != nil {
			return nil, err
		}
	}
	libs, err := lddDeps(bb)
	if err != nil {
		return nil, err
	}
	applets, err := appletPaths(bb)
	if err != nil {
		return nil, err
	}

	l := newLayer()
	for _, d := range []string{"/bin", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/sbin", "/sys",
		"/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/var/log", "/var/run", "/var/spool/mail", "/var/www"} {
		l.dir(d, 0o755)
	}
	l.dir("/root", 0o700)
	l.dir("/tmp", 0o1777)
	l.dir("/var/tmp", 0o1777)

	if err := l.copyFile("/bin/busybox", bb, 0o755); err != nil {
		return nil, err
	}
	for _, a := range applets {
		// Every applet in /bin, and also where busybox --install would put
		// it (/sbin, /usr/bin, /usr/sbin).
		l.hardlink("/bin/"+path.Base(a), "/bin/busybox")
		if a != "/bin/"+path.Base(a) {
			l.hardlink(a, "/bin/busybox")
		}
	}
	for _, lib := range libs {
		st, err := os.Stat(lib)
		if err != nil {
			return nil, err
		}
		// Stored as regular files at the path ldd reports, following the
		// host's symlinks (/lib -> usr/lib, /lib64/ld-linux… -> /lib/…).
		if err := l.copyFile(lib, lib, int64(st.Mode().Perm())); err != nil {
			return nil, err
		}
	}
	for _, h := range busyboxHelpers {
		// Where Debian's procps and util-linux install them.
		if err := b.addHelper(l, h, "/usr/bin/"+h, 0o755); err != nil {
			return nil, err
		}
	}
	l.file("/etc/passwd", 0o644, []byte(basePasswd))
	l.file("/etc/group", 0o644, []byte(baseGroup))
	l.file("/etc/nsswitch.conf", 0o644, []byte(nsswitch))

	layer, err := l.build()
	if err != nil {
		return nil, err
	}
	b.base = layer
	b.baseDesc = fmt.Sprintf("busybox userland (%s, %d applets, %s)", bb, len(applets), strings.Join(libs, " "))
	return layer, nil
}

// debianBusybox returns the busybox binary of Debian's busybox package.
func debianBusybox() (string, error) {
	out, err := exec.Command("dpkg-query", "-L", "busybox").Output()
	if err != nil {
		return "", errors.New("the busybox Debian package is not installed (apt-get install busybox; busybox-static will not do)")
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		p := sc.Text()
		if path.Base(p) != "busybox" {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("no busybox executable among the files of Debian's busybox package")
}

var (
	lddArrow  = regexp.MustCompile(`^\s*\S+\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)`)
	lddDirect = regexp.MustCompile(`^\s*(/\S+)\s+\(0x[0-9a-f]+\)`)
)

// lddDeps returns the shared libraries and the dynamic loader of bin, as
// ldd prints them, and fails for a static binary.
func lddDeps(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("not a dynamic executable")) {
		return nil, fmt.Errorf("%s: not a dynamic executable (ldd: %v, %s); need Debian's dynamic busybox, not busybox-static", bin, err, strings.TrimSpace(string(out)))
	}
	var libs []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if m := lddArrow.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		} else if m := lddDirect.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		} else if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", bin, strings.TrimSpace(line))
		}
	}
	// The loader is the ELF interpreter; make sure ldd's list has it.
	f, err := elf.Open(bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		data := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(data, 0); err != nil {
			return nil, err
		}
		interp := strings.TrimRight(string(data), "\x00")
		if !slices.Contains(libs, interp) {
			libs = append(libs, interp)
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries found in %q", bin, out)
	}
	return libs, nil
}

// appletPaths returns every applet as an absolute path ("/bin/ls",
// "/usr/bin/id"), from busybox --list-full.
func appletPaths(bb string) ([]string, error) {
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", bb, err)
	}
	var applets []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p := path.Clean("/" + line)
		if path.Dir(p) == "/" { // linuxrc: no directory given, keep it in /bin only
			p = "/bin" + p
		}
		if !fs.ValidPath(strings.TrimPrefix(p, "/")) {
			return nil, fmt.Errorf("%s --list-full: odd applet path %q", bb, line)
		}
		applets = append(applets, p)
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list-full printed no applets", bb)
	}
	return applets, nil
}
