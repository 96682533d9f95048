package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// init locks the main goroutine to the main thread for the life of the
// program ("calling LockOSThread from an init function will cause the main
// function to be invoked on that thread", package runtime). Without it a
// goroutine of this package that changes its thread's namespaces could run
// on the main thread, whose namespaces are the ones /proc/self/ns shows
// for the whole daemon (and which the runtime never discards).
func init() { runtime.LockOSThread() }

// errMainThread guards against the impossible: a namespace change on the
// main thread.
var errMainThread = errors.New("refusing to change the namespaces of the main thread")

// nsKind is one namespace type a pod can pin.
type nsKind struct {
	name string // the file name under /proc/<pid>/ns and under the pod's ns dir
	flag int
}

var (
	nsNet = nsKind{"net", unix.CLONE_NEWNET}
	nsIPC = nsKind{"ipc", unix.CLONE_NEWIPC}
	nsUTS = nsKind{"uts", unix.CLONE_NEWUTS}
)

// allPinnable are every namespace kind a pod may pin, for teardown.
var allPinnable = []nsKind{nsNet, nsIPC, nsUTS, nsUser}

// pinNamespaces creates fresh namespaces of the given kinds and keeps each
// alive by bind-mounting its /proc file onto dir/<kind>, so no process has to
// hold them (CRI-O's pinns, containerd's netns package). The hostname is set
// inside the new UTS namespace before it is pinned: it is the only place the
// hostname belongs, since a container that joins the namespace and sets one
// renames the whole pod.
//
// The work happens on a goroutine locked to its OS thread that never
// unlocks: unshare moves only that thread, and a goroutine that exits while
// locked takes its thread down with it, so the daemon's other threads (and
// the main thread) never end up in a pod's namespaces.
//
// Pods with a user namespace pin theirs with pinUserNamespaces (userns.go):
// unshare(CLONE_NEWUSER) needs a single-threaded caller.
//
// On error, whatever was pinned is undone.
func pinNamespaces(dir string, kinds []nsKind, hostname string) (paths map[string]string, retErr error) {
	if len(kinds) == 0 {
		return map[string]string{}, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = unpinNamespaces(dir)
		}
	}()
	paths = map[string]string{}
	flags := 0
	for _, k := range kinds {
		p := filepath.Join(dir, k.name)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o444)
		if err != nil {
			return nil, err
		}
		f.Close()
		paths[k.name] = p
		flags |= k.flag
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: this thread dies with the goroutine.
		errc <- func() error {
			if unix.Gettid() == unix.Getpid() {
				return errMainThread
			}
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if flags&unix.CLONE_NEWUTS != 0 && hostname != "" {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("set hostname %q: %w", hostname, err)
				}
			}
			tid := unix.Gettid()
			for _, k := range kinds {
				src := fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), tid, k.name)
				if err := unix.Mount(src, paths[k.name], "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("bind %s namespace to %s: %w", k.name, paths[k.name], err)
				}
			}
			return nil
		}()
	}()
	return paths, <-errc
}

// unpinNamespaces unmounts and removes every pinned namespace file in dir
// and dir itself. It succeeds when there is nothing left to remove.
func unpinNamespaces(dir string) error {
	var errs []error
	for _, k := range allPinnable {
		p := filepath.Join(dir, k.name)
		if err := unmountAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountAll unmounts path until nothing is mounted there (a crash between
// two binds could stack mounts). A path that is not a mount point, or does
// not exist, is fine.
func unmountAll(path string) error {
	for range 8 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", path)
}

// isNamespace reports whether path is a mounted namespace file (nsfs).
func isNamespace(path string) bool {
	var st unix.Statfs_t
	return path != "" && unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// inNamespaces runs fn on a thread that has joined the namespaces at paths
// (keyed by kind name, empty paths skipped). As in pinNamespaces the thread
// is discarded afterwards rather than switched back.
func inNamespaces(paths map[string]string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			if unix.Gettid() == unix.Getpid() {
				return errMainThread
			}
			for kind, p := range paths {
				if p == "" {
					continue
				}
				fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("open %s namespace: %w", kind, err)
				}
				err = unix.Setns(fd, 0)
				unix.Close(fd)
				if err != nil {
					return fmt.Errorf("join %s namespace %s: %w", kind, p, err)
				}
			}
			return fn()
		}()
	}()
	return <-errc
}
