package e2e

import (
	"fmt"
	"sort"
	"strings"
)

// goTestResults reads `go test -v` output and returns each test's result
// (PASS, FAIL or SKIP) by name, subtests included under their full
// "Parent/sub" name. Result lines of subtests are indented; a line that
// merely contains "--- PASS" (a log line, say) does not start with it once
// trimmed of that indentation, so it is not taken for a result.
func goTestResults(out string) map[string]string {
	res := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimLeft(strings.TrimRight(l, "\r"), " \t")
		rest, ok := strings.CutPrefix(l, "--- ")
		if !ok {
			continue
		}
		verdict, rest, ok := strings.Cut(rest, ": ")
		if !ok || (verdict != "PASS" && verdict != "FAIL" && verdict != "SKIP") {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		if name != "" {
			res[name] = verdict
		}
	}
	return res
}

// requirePassed checks `go test -v` output for tests that must have really
// run: each name must report PASS, and neither it nor any of its subtests
// may report SKIP or FAIL. A suite that skips itself (a kernel without the
// feature it tests) passes `go test` and prints PASS; only this tells it
// from one that ran.
func requirePassed(out string, names ...string) error {
	res := goTestResults(out)
	var bad []string
	for _, n := range names {
		if v, ok := res[n]; !ok {
			bad = append(bad, n+": no result (did it run?)")
		} else if v != "PASS" {
			bad = append(bad, n+": "+v)
		}
		for sub, v := range res {
			if strings.HasPrefix(sub, n+"/") && v != "PASS" {
				bad = append(bad, sub+": "+v)
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("tests did not pass: %s", strings.Join(bad, "; "))
	}
	return nil
}
