// Command report reads the ginkgo JSON report of a critest run and checks it
// against test/critest/expected-pass.txt. test/critest/run.sh runs it; it
// prints, last:
//
//	critest: N passed, N failed, N skipped
//	expected: N passed, N failed
//
// and exits 1 when a spec listed in expected-pass.txt did not pass. Specs
// that passed without being listed are printed as "newly passing" and do
// not fail the run. With -focused, listed specs that the focus filtered out
// are not counted at all.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// specReport is the part of ginkgo v2's types.SpecReport we need.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	RunTime                 time.Duration
	Failure                 struct {
		Message  string
		Location struct {
			FileName   string
			LineNumber int
		}
	}
}

type suiteReport struct {
	SpecReports []specReport
}

func (s specReport) name() string {
	return strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
}

// failed covers every ginkgo state that is not a pass or a skip.
func (s specReport) failed() bool {
	switch s.State {
	case "failed", "panicked", "interrupted", "aborted", "timedout":
		return true
	}
	return false
}

// filteredOut: ginkgo reports specs excluded by --focus/--skip as skipped,
// with no run time and no message, unlike specs that call Skip().
func (s specReport) filteredOut() bool {
	return s.State == "skipped" && s.RunTime == 0 && s.Failure.Message == ""
}

func main() {
	reportPath := flag.String("report", "", "ginkgo JSON report (--json-report)")
	expectedPath := flag.String("expected", "", "expected-pass.txt: one full spec name per line, # comments")
	focused := flag.Bool("focused", false, "the run used --focus: ignore expected specs it did not select")
	benchmarkDir := flag.String("benchmark", "", "critest ran in -benchmark mode with this output directory: summarise it instead of checking expected-pass.txt")
	flag.Parse()
	if *benchmarkDir != "" && *reportPath != "" {
		specs, err := readReport(*reportPath)
		if err != nil {
			fmt.Printf("no usable critest report: %v\n", err)
			os.Exit(1)
		}
		if !benchmarkCheck(os.Stdout, specs, *benchmarkDir) {
			os.Exit(1)
		}
		return
	}
	if *reportPath == "" || *expectedPath == "" {
		flag.Usage()
		os.Exit(2)
	}
	expected, err := readExpected(*expectedPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(2)
	}
	specs, err := readReport(*reportPath)
	if err != nil {
		// critest died before writing a report (or wrote a broken one):
		// nothing passed, and the run fails even with an empty list.
		fmt.Printf("no usable critest report: %v\n", err)
		fmt.Println("critest: 0 passed, 0 failed, 0 skipped")
		fmt.Printf("expected: 0 passed, %d failed\n", len(expected))
		os.Exit(1)
	}
	if !check(os.Stdout, specs, expected, *focused) {
		os.Exit(1)
	}
}

// check prints the summary and reports whether every expected spec passed.
func check(w io.Writer, specs []specReport, expected []string, focused bool) bool {
	byName := map[string]specReport{}
	var passed, failed, skipped int
	var failures []specReport
	var newly []string
	for _, s := range specs {
		byName[s.name()] = s
		switch {
		case s.State == "passed":
			passed++
			if !slices.Contains(expected, s.name()) {
				newly = append(newly, s.name())
			}
		case s.failed():
			failed++
			failures = append(failures, s)
		default: // skipped, pending
			skipped++
		}
	}

	if len(failures) > 0 {
		fmt.Fprintln(w, "failed specs:")
		for _, s := range failures {
			fmt.Fprintf(w, "  [%s] %s\n      %s:%d: %s\n", s.State, s.name(), s.Failure.Location.FileName, s.Failure.Location.LineNumber, summary(s.Failure.Message))
		}
	}
	if len(newly) > 0 {
		fmt.Fprintln(w, "newly passing, add them to test/critest/expected-pass.txt:")
		for _, n := range newly {
			fmt.Fprintln(w, n)
		}
	}

	var expPassed, expFailed, notSelected int
	var missing []string
	for _, name := range expected {
		s, ok := byName[name]
		switch {
		case ok && s.State == "passed":
			expPassed++
		case ok && focused && s.filteredOut():
			notSelected++
		case !ok:
			expFailed++
			missing = append(missing, fmt.Sprintf("  %s (not in the report: renamed or removed?)", name))
		default:
			expFailed++
			missing = append(missing, fmt.Sprintf("  %s (%s)", name, s.State))
		}
	}
	if len(missing) > 0 {
		fmt.Fprintln(w, "expected to pass but did not:")
		for _, m := range missing {
			fmt.Fprintln(w, m)
		}
	}
	if notSelected > 0 {
		fmt.Fprintf(w, "%d expected specs not selected by --focus, not counted\n", notSelected)
	}

	fmt.Fprintf(w, "critest: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	fmt.Fprintf(w, "expected: %d passed, %d failed\n", expPassed, expFailed)
	return expFailed == 0
}

// gomegaType matches the "<*fmt.wrapError | 0xc000123>:" lines gomega puts
// before the error text.
var gomegaType = regexp.MustCompile(`^<[^>]*>:?$`)

// summary shortens a failure message to one line. Gomega's messages often
// open with "Unexpected error:" and put the error a line or two below.
func summary(msg string) string {
	var lines []string
	for l := range strings.SplitSeq(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" && !gomegaType.MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "(no message)"
	}
	out := lines[0]
	if strings.HasSuffix(out, ":") && len(lines) > 1 {
		out += " " + lines[1]
	}
	if len(out) > 240 {
		out = out[:240] + "…"
	}
	return out
}

// readReport returns the It specs of every suite in the report; setup and
// teardown nodes (BeforeSuite, ReportAfterSuite, …) are not specs.
func readReport(path string) ([]specReport, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var suites []suiteReport
	if err := json.Unmarshal(data, &suites); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []specReport
	for _, su := range suites {
		for _, s := range su.SpecReports {
			if s.LeafNodeType == "It" {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no specs in the report", path)
	}
	return out, nil
}

func readExpected(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if slices.Contains(out, line) {
			return nil, fmt.Errorf("%s: %q listed twice", path, line)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}
