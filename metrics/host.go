package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// processCounts are summed over a container's processes from /proc.
type processCounts struct{ threads, fds, sockets uint64 }

// countProcesses reads each process's thread count and open descriptors.
// A process that exits meanwhile is simply not counted.
func countProcesses(pids []int) processCounts {
	var pc processCounts
	for _, pid := range pids {
		if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			pc.threads += keyedValue(status, "Threads:")
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		pc.fds += uint64(len(fds))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(target, "socket:") {
				pc.sockets++
			}
		}
	}
	return pc
}

// keyedValue returns the number after key in a "key value" file (a
// /proc status file, memory.events, memory.oom_control); 0 if absent.
func keyedValue(data []byte, key string) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// oomKills counts the container's OOM kills: memory.events on cgroup v2,
// memory.oom_control on v1 (kernel 4.13 and later).
func oomKills(paths map[string]string, cgroup2 bool) uint64 {
	file := filepath.Join(paths["memory"], "memory.oom_control")
	if cgroup2 {
		file = filepath.Join(paths[""], "memory.events")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	return keyedValue(data, "oom_kill")
}

// fsInfo describes the file system the containers' writable layers are on.
type fsInfo struct {
	device                              string
	inodesFree, inodesTotal, limitBytes uint64
}

// statFS measures dir's file system; its device label is the directory,
// the way kubelet names the image and container file systems.
func statFS(dir string) fsInfo {
	info := fsInfo{device: dir}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		info.inodesFree, info.inodesTotal = st.Ffree, st.Files
		info.limitBytes = st.Blocks * uint64(st.Bsize)
	}
	return info
}

// deviceName names a block device by its numbers, as cAdvisor labels
// devices ("/dev/vda"); the numbers when sysfs does not know it.
func deviceName(major, minor uint64) string {
	data, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "DEVNAME="); ok {
				return "/dev/" + name
			}
		}
	}
	return fmt.Sprintf("%d:%d", major, minor)
}
