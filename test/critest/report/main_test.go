package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A trimmed ginkgo v2 JSON report: one passed, one failed, one skipped by
// Skip(), one filtered out by --focus/--skip, and a suite node to ignore.
const sampleReport = `[{"SuiteDescription": "CRI validation", "SpecReports": [
 {"ContainerHierarchyTexts": ["[k8s.io] Runtime info", "runtime should support returning runtime info"],
  "LeafNodeText": "runtime should return version info [Conformance]", "LeafNodeType": "It", "State": "passed", "RunTime": 1000},
 {"ContainerHierarchyTexts": ["[k8s.io] Image Manager"], "LeafNodeText": "public image with tag should be pulled and removed [Conformance]",
  "LeafNodeType": "It", "State": "failed", "RunTime": 2000,
  "Failure": {"Message": "Unexpected error:\n    <*fmt.wrapError | 0xc000>: \n    pull failed: boom\n    {\n", "Location": {"FileName": "image.go", "LineNumber": 42}}},
 {"ContainerHierarchyTexts": ["[k8s.io] NRI"], "LeafNodeText": "should run a plugin", "LeafNodeType": "It", "State": "skipped", "RunTime": 500,
  "Failure": {"Message": "NRI socket not set"}},
 {"ContainerHierarchyTexts": ["[k8s.io] AppArmor"], "LeafNodeText": "should enforce a profile", "LeafNodeType": "It", "State": "skipped"},
 {"LeafNodeType": "ReportAfterSuite", "State": "passed"}
]}]`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	specs, err := readReport(writeFile(t, "report.json", sampleReport))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 4 {
		t.Fatalf("got %d specs, want the 4 It nodes", len(specs))
	}
	version := "[k8s.io] Runtime info runtime should support returning runtime info runtime should return version info [Conformance]"
	pull := "[k8s.io] Image Manager public image with tag should be pulled and removed [Conformance]"
	apparmor := "[k8s.io] AppArmor should enforce a profile"

	for _, tc := range []struct {
		name     string
		expected []string
		focused  bool
		ok       bool
		want     []string
	}{
		{"nothing expected", nil, false, true, []string{
			"newly passing, add them to test/critest/expected-pass.txt:\n" + version + "\n",
			"image.go:42: Unexpected error: pull failed: boom\n",
			"critest: 1 passed, 1 failed, 2 skipped\nexpected: 0 passed, 0 failed\n",
		}},
		{"expected passes", []string{version}, false, true, []string{"expected: 1 passed, 0 failed\n"}},
		{"expected fails", []string{version, pull}, false, false, []string{
			"expected to pass but did not:\n  " + pull + " (failed)\n",
			"expected: 1 passed, 1 failed\n",
		}},
		{"renamed spec", []string{"[k8s.io] gone"}, false, false, []string{"not in the report", "expected: 0 passed, 1 failed\n"}},
		{"filtered out without --focus", []string{apparmor}, false, false, []string{"expected: 0 passed, 1 failed\n"}},
		{"filtered out by --focus", []string{apparmor}, true, true, []string{"1 expected specs not selected", "expected: 0 passed, 0 failed\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			if ok := check(&out, specs, tc.expected, tc.focused); ok != tc.ok {
				t.Errorf("check() = %v, want %v\n%s", ok, tc.ok, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if !strings.HasSuffix(out.String(), "\n") || !strings.HasPrefix(lastLine(out.String()), "expected: ") {
				t.Errorf("last line is not the expected: summary:\n%s", out.String())
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestReadExpected(t *testing.T) {
	got, err := readExpected(writeFile(t, "expected.txt", "# comment\n\n  [k8s.io] A spec  \n[k8s.io] B\n"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "[k8s.io] A spec|[k8s.io] B" {
		t.Errorf("got %q", got)
	}
	if _, err := readExpected(writeFile(t, "dup.txt", "x\nx\n")); err == nil {
		t.Error("a spec listed twice was accepted")
	}
}

func TestReadReportBroken(t *testing.T) {
	if _, err := readReport(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing report accepted")
	}
	if _, err := readReport(writeFile(t, "empty.json", `[{"SpecReports": []}]`)); err == nil {
		t.Error("report without specs accepted")
	}
}

func TestBenchmarkCheck(t *testing.T) {
	dir := t.TempDir()
	data := `{"operationsNames":["CreatePod","RemovePod"],"numParallel":2,"datapoints":[
		{"operationsDurationsNs":[3000000,1000000]},{"operationsDurationsNs":[1000000,1000000]},
		{"operationsDurationsNs":[2000000,1000000]}]}`
	if err := os.WriteFile(filepath.Join(dir, "pod_benchmark_data.json"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	passed := specReport{LeafNodeText: "benchmark about lifecycle of PodSandbox", State: "passed"}
	var out strings.Builder
	if !benchmarkCheck(&out, []specReport{passed}, dir) {
		t.Fatalf("a passing run failed:\n%s", out.String())
	}
	for _, want := range []string{"pod_benchmark_data.json (3 samples, 2 in parallel)", "CreatePod", "median        2ms", "p90        3ms", "critest benchmarks: 1 passed, 0 failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	failed := specReport{LeafNodeText: "benchmark about listing Image", State: "failed"}
	out.Reset()
	if benchmarkCheck(&out, []specReport{passed, failed}, dir) {
		t.Fatalf("a failed benchmark passed:\n%s", out.String())
	}
}
