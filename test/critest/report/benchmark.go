package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// lifecycleResults is what critest's benchmark mode writes per benchmark
// (pkg/benchmark LifecycleBenchmarksResultsSet): the operations of one
// cycle and, per sample, each operation's duration.
type lifecycleResults struct {
	OperationsNames []string `json:"operationsNames"`
	NumParallel     int      `json:"numParallel"`
	Datapoints      []struct {
		OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
	} `json:"datapoints"`
}

// benchmarkCheck prints whether every benchmark spec passed, then the
// median and 90th percentile of each operation in every result file in
// dir. It reports whether all passed.
func benchmarkCheck(w io.Writer, specs []specReport, dir string) bool {
	var passed, failed int
	for _, s := range specs {
		switch {
		case s.State == "passed":
			passed++
		case s.failed():
			failed++
			fmt.Fprintf(w, "failed: %s\n      %s\n", s.name(), summary(s.Failure.Message))
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	slices.Sort(files)
	for _, f := range files {
		if err := printLifecycle(w, f); err != nil {
			fmt.Fprintf(w, "%s: %v\n", filepath.Base(f), err)
		}
	}
	fmt.Fprintf(w, "critest benchmarks: %d passed, %d failed\n", passed, failed)
	return failed == 0 && passed > 0
}

func printLifecycle(w io.Writer, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r lifecycleResults
	if err := json.Unmarshal(data, &r); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s (%d samples, %d in parallel):\n", filepath.Base(path), len(r.Datapoints), max(r.NumParallel, 1))
	for i, op := range r.OperationsNames {
		var ds []time.Duration
		for _, p := range r.Datapoints {
			if i < len(p.OperationsDurationsNs) {
				ds = append(ds, time.Duration(p.OperationsDurationsNs[i]))
			}
		}
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		fmt.Fprintf(w, "  %-24s median %10v  p90 %10v\n", op, ds[len(ds)/2].Round(10*time.Microsecond), ds[len(ds)*9/10].Round(10*time.Microsecond))
	}
	return nil
}
