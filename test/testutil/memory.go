package testutil

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory returns a process's resident (Rss) and proportional (Pss) set
// sizes in bytes, from /proc/PID/smaps_rollup.
func Memory(pid int) (rss, pss uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(fields[1], 10, 64)
		switch fields[0] {
		case "Rss:":
			rss = v << 10
		case "Pss:":
			pss = v << 10
		}
	}
	return rss, pss, sc.Err()
}
