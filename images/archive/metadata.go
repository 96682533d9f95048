package archive

import (
	"archive/tar"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const paxXattrPrefix = "SCHILY.xattr."

// tarMode is the permission part of a tar mode, with setuid, setgid and
// sticky bits.
func tarMode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

// xattrs returns the extended attributes a PAX header carries.
func xattrs(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = v
		}
	}
	return out
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// setOwnerModeXattrs applies metadata to base in the directory dfd without
// following base if it is a symlink. Symlinks have no mode of their own.
func setOwnerModeXattrs(dfd int, base string, hdr *tar.Header) error {
	if err := unix.Fchownat(dfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// base is not a symlink (it was just made), so following is moot.
		if err := unix.Fchmodat(dfd, base, tarMode(hdr), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	attrs := xattrs(hdr)
	if len(attrs) == 0 {
		return nil
	}
	// lsetxattr through the descriptor's /proc link: the kernel resolves the
	// directory by descriptor and does not follow base.
	p := "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + base
	for name, value := range attrs {
		if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

// setTimes sets base's access and modification times, not following it.
func setTimes(dfd int, base string, hdr *tar.Header) error {
	ts := []unix.Timespec{unix.NsecToTimespec(accessTime(hdr).UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(dfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// setDirTimes applies the directory times deferred during the unpack.
func (a *applier) setDirTimes() error {
	for _, d := range a.dirTimes {
		parent, base := path.Split(d.path)
		// Every directory still pending exists: forgetUnder dropped those
		// a later entry removed.
		dir, err := a.parents.open(strings.TrimSuffix(parent, "/"))
		if err != nil {
			return &EntryError{Entry: d.path, Err: err}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(d.atime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
		if base == "" {
			err = unix.UtimesNanoAt(int(dir.Fd()), ".", ts, 0)
		} else {
			err = unix.UtimesNanoAt(int(dir.Fd()), base, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return &EntryError{Entry: d.path, Err: fmt.Errorf("set times: %w", err)}
		}
	}
	return nil
}
