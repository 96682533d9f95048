// Command ipcs is a minimal util-linux-compatible ipcs for the busybox test
// image: Debian's busybox is built without ipcs, and critest's HostIpc specs
// run `ipcs -m` in a container and look for (or make sure there is not) the
// shared memory id of a segment created on the host with ipcmk.
//
// It reads /proc/sysvipc/{shm,msg,sem}, which the kernel answers for the IPC
// namespace of the reading process, and prints util-linux's default table
// layout. Supported: -m, -q, -s, -a (the default: all three).
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
)

func main() {
	var shm, msg, sem bool
	for _, a := range os.Args[1:] {
		if len(a) < 2 || a[0] != '-' {
			fmt.Fprintf(os.Stderr, "ipcs: unexpected argument %q\nUsage: ipcs [-m|-q|-s|-a]\n", a)
			os.Exit(1)
		}
		for _, c := range a[1:] {
			switch c {
			case 'm':
				shm = true
			case 'q':
				msg = true
			case 's':
				sem = true
			case 'a':
				shm, msg, sem = true, true, true
			default:
				fmt.Fprintf(os.Stderr, "ipcs: invalid option -- '%c'\nUsage: ipcs [-m|-q|-s|-a]\n", c)
				os.Exit(1)
			}
		}
	}
	if !shm && !msg && !sem {
		shm, msg, sem = true, true, true
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	if msg {
		fmt.Fprint(w, "\n------ Message Queues --------\n")
		fmt.Fprintf(w, "%-10s %-10s %-10s %-10s %-12s %-12s\n", "key", "msqid", "owner", "perms", "used-bytes", "messages")
		for _, r := range table("/proc/sysvipc/msg") {
			fmt.Fprintf(w, "0x%08x %-10s %-10s %-10o %-12s %-12s\n", key(r["key"]), r["msqid"], owner(r["uid"]), perms(r["perms"])&0o777, r["cbytes"], r["qnum"])
		}
		fmt.Fprintln(w)
	}
	if shm {
		fmt.Fprint(w, "\n------ Shared Memory Segments --------\n")
		fmt.Fprintf(w, "%-10s %-10s %-10s %-10s %-10s %-10s %-12s\n", "key", "shmid", "owner", "perms", "bytes", "nattch", "status")
		for _, r := range table("/proc/sysvipc/shm") {
			mode := perms(r["perms"])
			status := ""
			if mode&0o1000 != 0 { // SHM_DEST
				status += "dest "
			}
			if mode&0o2000 != 0 { // SHM_LOCKED
				status += "locked "
			}
			fmt.Fprintf(w, "0x%08x %-10s %-10s %-10o %-10s %-10s %-12s\n", key(r["key"]), r["shmid"], owner(r["uid"]), mode&0o777, r["size"], r["nattch"], status)
		}
		fmt.Fprintln(w)
	}
	if sem {
		fmt.Fprint(w, "\n------ Semaphore Arrays --------\n")
		fmt.Fprintf(w, "%-10s %-10s %-10s %-10s %-10s\n", "key", "semid", "owner", "perms", "nsems")
		for _, r := range table("/proc/sysvipc/sem") {
			fmt.Fprintf(w, "0x%08x %-10s %-10s %-10o %-10s\n", key(r["key"]), r["semid"], owner(r["uid"]), perms(r["perms"])&0o777, r["nsems"])
		}
		fmt.Fprintln(w)
	}
}

// table parses one /proc/sysvipc file into rows keyed by its header's column
// names, so a kernel that adds columns does not shift the ones we print.
func table(path string) []map[string]string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil // no SysV IPC in this kernel: print empty tables, as util-linux does
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 2 {
		return nil
	}
	head := strings.Fields(lines[0])
	var rows []map[string]string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		row := map[string]string{}
		for i, h := range head {
			if i < len(f) {
				row[h] = f[i]
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// key parses a key column: the kernel prints keys as signed 32-bit
// decimals, util-linux shows them as unsigned hex.
func key(s string) uint32 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return uint32(int32(n))
}

// perms parses a perms column, which the kernel prints in octal.
func perms(s string) uint64 {
	n, _ := strconv.ParseUint(s, 8, 32)
	return n
}

func owner(uid string) string {
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return uid
}
