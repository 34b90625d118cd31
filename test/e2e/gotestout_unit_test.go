package e2e

import (
	"strings"
	"testing"
)

// A trimmed `go test -v` run of a suite like internal/dmsnap's, in the
// shapes the real tool prints.
const sampleRun = `=== RUN   TestParse
--- PASS: TestParse (0.00s)
=== RUN   TestLoopRoot
    dmsnap_root_test.go:46: real-kernel test: no device-mapper; load dm_mod
--- SKIP: TestLoopRoot (0.00s)
=== RUN   TestSnapRoot
=== RUN   TestSnapRoot/busy
    x_test.go:9: saw --- PASS: TestSnapRoot/leaks in a log line
=== RUN   TestSnapRoot/leaks
--- PASS: TestSnapRoot (0.12s)
    --- PASS: TestSnapRoot/busy (0.05s)
    --- SKIP: TestSnapRoot/leaks (0.00s)
=== RUN   TestFailRoot
--- FAIL: TestFailRoot (0.01s)
=== RUN   TestOkRoot
=== RUN   TestOkRoot/a_b
--- PASS: TestOkRoot (0.02s)
    --- PASS: TestOkRoot/a_b (0.01s)
PASS
`

func TestGoTestResults(t *testing.T) {
	got := goTestResults(sampleRun)
	want := map[string]string{
		"TestParse": "PASS", "TestLoopRoot": "SKIP", "TestSnapRoot": "PASS",
		"TestSnapRoot/busy": "PASS", "TestSnapRoot/leaks": "SKIP",
		"TestFailRoot": "FAIL", "TestOkRoot": "PASS", "TestOkRoot/a_b": "PASS",
	}
	if len(got) != len(want) {
		t.Errorf("parsed %d results, want %d: %v", len(got), len(want), got)
	}
	for n, v := range want {
		if got[n] != v {
			t.Errorf("%s: %q, want %q", n, got[n], v)
		}
	}
}

func TestRequirePassed(t *testing.T) {
	for _, tc := range []struct {
		names []string
		bad   []string // each must be named in the error; none means no error
	}{
		{names: []string{"TestParse", "TestOkRoot"}},
		{names: []string{"TestLoopRoot"}, bad: []string{"TestLoopRoot: SKIP"}},
		{names: []string{"TestSnapRoot"}, bad: []string{"TestSnapRoot/leaks: SKIP"}},
		{names: []string{"TestFailRoot"}, bad: []string{"TestFailRoot: FAIL"}},
		{names: []string{"TestOk"}, bad: []string{"TestOk: no result"}},
		{names: []string{"TestParse", "TestGone"}, bad: []string{"TestGone: no result"}},
	} {
		err := requirePassed(sampleRun, tc.names...)
		if len(tc.bad) == 0 {
			if err != nil {
				t.Errorf("%v: %v", tc.names, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%v: no error, want one naming %v", tc.names, tc.bad)
			continue
		}
		for _, b := range tc.bad {
			if !strings.Contains(err.Error(), b) {
				t.Errorf("%v: error %q does not name %q", tc.names, err, b)
			}
		}
	}
	// A suite that skipped everything still ends in "PASS": that alone
	// must not count.
	if err := requirePassed("--- SKIP: TestLoopRoot (0.00s)\nPASS\nok\n", "TestLoopRoot"); err == nil {
		t.Error("an all-skipped run counted as passed")
	}
}
