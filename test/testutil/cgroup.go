package testutil

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RemoveCgroup removes the cgroup at rel (e.g. "berthtest") and every cgroup
// below it, in every hierarchy mounted under /sys/fs/cgroup (v1 controllers
// and the unified v2 tree). Cgroups still holding processes stay; it returns
// the ones it could not remove.
func RemoveCgroup(rel string) []string {
	var left []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		top := filepath.Join(root, rel)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// Deepest first: a cgroup with children cannot be removed.
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				left = append(left, d)
			}
		}
	}
	return left
}
