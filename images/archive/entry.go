package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Whiteout names of the OCI image layer format.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// apply makes one entry and returns the bytes of file content it wrote.
func (a *applier) apply(hdr *tar.Header, content io.Reader) (int64, error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return 0, nil // PAX defaults for later entries; archive/tar applies them
	}
	name, err := cleanEntryName(hdr.Name)
	if err != nil {
		return 0, err
	}
	if name == "" {
		return 0, a.applyRoot(hdr)
	}
	parent, base := path.Split(name)
	parent = strings.TrimSuffix(parent, "/")

	dirPath, err := a.resolveDir(parent)
	if err != nil {
		return 0, err
	}
	dir, err := a.parents.open(dirPath)
	if err != nil {
		return 0, err
	}
	dfd := int(dir.Fd())

	if strings.HasPrefix(base, whiteoutPrefix) {
		return 0, a.whiteout(dfd, dirPath, base)
	}
	target := path.Join(dirPath, base)

	keepDir, err := a.clearTarget(dfd, target, base, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return 0, err
	}

	var written int64
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !keepDir {
			if err := unix.Mkdirat(dfd, base, 0o700); err != nil {
				return 0, fmt.Errorf("mkdir: %w", err)
			}
		}
	case tar.TypeReg, tar.TypeGNUSparse: // archive/tar turns the old TypeRegA into TypeReg
		if written, err = a.writeFile(dfd, base, hdr, content); err != nil {
			return 0, err
		}
		// writeFile set owner, mode and xattrs on the open file.
		return written, setTimes(dfd, base, hdr)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, dfd, base); err != nil {
			return 0, fmt.Errorf("symlink: %w", err)
		}
		a.symlinks[target] = hdr.Linkname
	case tar.TypeLink:
		// A hard link shares its target's inode and metadata: nothing more
		// to set.
		return 0, a.hardLink(dfd, base, target, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(dfd, base, mode|0o600, int(dev)); err != nil {
			return 0, fmt.Errorf("mknod: %w", err)
		}
	default:
		return 0, fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}

	if err := setOwnerModeXattrs(dfd, base, hdr); err != nil {
		return 0, err
	}
	if hdr.Typeflag == tar.TypeDir {
		a.dirTimes = append(a.dirTimes, pendingTimes{path: target, atime: accessTime(hdr), mtime: hdr.ModTime})
		return 0, nil
	}
	return 0, setTimes(dfd, base, hdr)
}

// applyRoot applies the metadata of the archive's "./" entry to the layer
// root, which overlayfs shows as the container's "/".
func (a *applier) applyRoot(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return errors.New("the layer root must be a directory")
	}
	root, err := a.parents.open("")
	if err != nil {
		return err
	}
	fd := int(root.Fd())
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, tarMode(hdr)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for name, value := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, name, []byte(value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	a.dirTimes = append(a.dirTimes, pendingTimes{path: "", atime: accessTime(hdr), mtime: hdr.ModTime})
	return nil
}

// clearTarget makes room for a new entry at base: a later entry replaces
// an earlier one of the same name, except that a directory over a directory
// merges (keepDir reports that). The old entry is removed, never written
// through, so a symlink left by an earlier entry cannot redirect the write.
func (a *applier) clearTarget(dfd int, target, base string, isDir bool) (keepDir bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat existing entry: %w", err)
	}
	existingDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if existingDir && isDir {
		return true, nil
	}
	if existingDir {
		a.parents.evictUnder(target)
		if err := a.root.RemoveAll(target); err != nil {
			return false, fmt.Errorf("replace directory: %w", err)
		}
	} else if err := unix.Unlinkat(dfd, base, 0); err != nil {
		return false, fmt.Errorf("replace existing entry: %w", err)
	}
	a.forgetUnder(target)
	return false, nil
}

// writeFile creates a regular file exclusively (O_EXCL|O_NOFOLLOW: it can
// never open something that already exists) and copies its content.
func (a *applier) writeFile(dfd int, base string, hdr *tar.Header, content io.Reader) (int64, error) {
	fd, err := unix.Openat(dfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create file: %w", err)
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	n, err := io.CopyBuffer(onlyWriter{f}, content, a.buf)
	if err != nil {
		return n, fmt.Errorf("write file: %w", err)
	}
	// Owner before mode: chown clears the setuid and setgid bits.
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return n, fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, tarMode(hdr)); err != nil {
		return n, fmt.Errorf("chmod: %w", err)
	}
	for name, value := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, name, []byte(value), 0); err != nil {
			return n, fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	if err := f.Close(); err != nil {
		return n, fmt.Errorf("close file: %w", err)
	}
	return n, nil
}

// onlyWriter hides *os.File's ReadFrom so io.CopyBuffer uses the buffer
// instead of trying copy_file_range/splice from a tar reader.
type onlyWriter struct{ io.Writer }

// hardLink links base to the archive member linkname, which must already
// exist inside this layer.
func (a *applier) hardLink(dfd int, base, target, linkname string) error {
	name, err := cleanEntryName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	if name == "" {
		return errors.New("hard link to the layer root")
	}
	tparent, tbase := path.Split(name)
	tdirPath, err := a.resolveDir(strings.TrimSuffix(tparent, "/"))
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	// Opened outside the cache: a cache refill could close dfd.
	tname := tdirPath
	if tname == "" {
		tname = "."
	}
	tdir, err := a.root.OpenFile(tname, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("hard link target %q is not in this layer: %w", linkname, err)
	}
	defer tdir.Close()
	if err := unix.Linkat(int(tdir.Fd()), tbase, dfd, base, 0); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("hard link target %q is not in this layer: %w", linkname, err)
		}
		return fmt.Errorf("hard link to %q: %w", linkname, err)
	}
	// A hard link to a symlink is a symlink too.
	if t, ok := a.symlinks[path.Join(tdirPath, tbase)]; ok {
		a.symlinks[target] = t
	}
	return nil
}

// whiteout records a deletion in the form overlayfs reads.
func (a *applier) whiteout(dfd int, dirPath, base string) error {
	if base == opaqueMarker {
		// The directory hides everything below it in lower layers; the
		// xattr needs CAP_SYS_ADMIN, which a CRI runtime has.
		if err := unix.Fsetxattr(dfd, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("mark directory opaque: %w", err)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata (".wh..wh.plnk", …) means nothing to overlayfs
	}
	hidden := strings.TrimPrefix(base, whiteoutPrefix)
	if hidden == "" || hidden == "." || hidden == ".." {
		return fmt.Errorf("whiteout of %q: %w", hidden, ErrUnsafePath)
	}
	if _, err := a.clearTarget(dfd, path.Join(dirPath, hidden), hidden, false); err != nil {
		return err
	}
	if err := unix.Mknodat(dfd, hidden, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("make whiteout device: %w", err)
	}
	return nil
}
