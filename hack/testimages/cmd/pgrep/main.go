// Command pgrep is a minimal procps-compatible pgrep for the busybox test
// image: Debian's busybox is built without pgrep, and critest's exec-timeout
// spec runs `sh -c "pgrep sleep || true"` inside the container and expects
// empty stdout and stderr once the timed-out exec was killed.
//
// Supported: PATTERN (an extended regular expression matched against the
// process name, i.e. /proc/PID/comm), -f (match the full command line),
// -x (the whole name must match), -l / -a (list the name / full command line
// after the PID), -c (print a count), -d DELIM. Exit status 0 when something
// matched, 1 when nothing did, 2 on a usage error, as procps does.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "pgrep: %s\nUsage: pgrep [-flaxc] [-d DELIM] PATTERN\n", msg)
	os.Exit(2)
}

func main() {
	var full, exact, listName, listFull, count bool
	delim := "\n"
	var pattern string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' || pattern != "" {
			if pattern != "" {
				usage("only one pattern can be provided")
			}
			pattern = a
			continue
		}
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case 'f':
				full = true
			case 'x':
				exact = true
			case 'l':
				listName = true
			case 'a':
				listFull = true
			case 'c':
				count = true
			case 'd':
				if j+1 < len(a) {
					delim = a[j+1:]
				} else if i+1 < len(args) {
					i++
					delim = args[i]
				} else {
					usage("option requires an argument -- 'd'")
				}
				j = len(a)
			default:
				usage(fmt.Sprintf("invalid option -- '%c'", a[j]))
			}
		}
	}
	if pattern == "" {
		usage("no matching criteria specified")
	}
	if exact {
		pattern = "^(?:" + pattern + ")$"
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		usage(fmt.Sprintf("invalid pattern %q: %v", pattern, err))
	}

	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)

	var out []string
	for _, pid := range pids {
		// A process can exit while we look at it: skip it silently.
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(string(comm), "\n")
		cmdline := name
		if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(raw) > 0 {
			cmdline = string(bytes.TrimRight(bytes.ReplaceAll(raw, []byte{0}, []byte{' '}), " "))
		}
		subject := name
		if full {
			subject = cmdline
		}
		if !re.MatchString(subject) {
			continue
		}
		switch {
		case listFull:
			out = append(out, fmt.Sprintf("%d %s", pid, cmdline))
		case listName:
			out = append(out, fmt.Sprintf("%d %s", pid, name))
		default:
			out = append(out, strconv.Itoa(pid))
		}
	}
	if count {
		fmt.Println(len(out))
	} else if len(out) > 0 {
		fmt.Print(strings.Join(out, delim) + "\n")
	}
	if len(out) == 0 {
		os.Exit(1)
	}
}
