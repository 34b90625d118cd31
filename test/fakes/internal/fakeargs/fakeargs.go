// Package fakeargs parses command lines the way the real Firecracker and
// jailer binaries do: long options only ("--name value" or "--name=value"),
// boolean switches without a value, repeatable options, and everything after
// a bare "--" passed through untouched. Unknown, repeated or positional
// arguments are errors, as they are for the real binaries, so that a caller
// relying on a lenient parser is caught by the test doubles.
package fakeargs

import (
	"fmt"
	"strings"
)

// Spec declares the options a binary accepts.
type Spec struct {
	Bools  []string // switches that take no value
	Values []string // options taking exactly one value, given at most once
	Multi  []string // options taking a value, repeatable
}

// Parsed is the result of Parse.
type Parsed struct {
	Values map[string]string
	Multi  map[string][]string
	Bools  map[string]bool
	Extra  []string // the arguments after "--"
}

// Has reports whether a value option or switch was given.
func (p *Parsed) Has(name string) bool {
	if _, ok := p.Values[name]; ok {
		return true
	}
	return p.Bools[name]
}

// Parse parses args (without the program name) against spec.
func Parse(spec Spec, args []string) (*Parsed, error) {
	kind := map[string]byte{}
	for _, n := range spec.Bools {
		kind[n] = 'b'
	}
	for _, n := range spec.Values {
		kind[n] = 'v'
	}
	for _, n := range spec.Multi {
		kind[n] = 'm'
	}
	p := &Parsed{Values: map[string]string{}, Multi: map[string][]string{}, Bools: map[string]bool{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.Extra = append([]string{}, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "--") || len(a) == 2 {
			return nil, fmt.Errorf("found argument %q which wasn't expected, or isn't valid in this context", a)
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		k, ok := kind[name]
		if !ok {
			return nil, fmt.Errorf("found argument %q which wasn't expected, or isn't valid in this context", "--"+name)
		}
		if k == 'b' {
			if hasVal {
				return nil, fmt.Errorf("argument --%s does not take a value", name)
			}
			if p.Bools[name] {
				return nil, fmt.Errorf("the argument --%s was provided more than once", name)
			}
			p.Bools[name] = true
			continue
		}
		if !hasVal {
			if i+1 >= len(args) || args[i+1] == "--" {
				return nil, fmt.Errorf("argument --%s requires a value", name)
			}
			i++
			val = args[i]
		}
		if k == 'm' {
			p.Multi[name] = append(p.Multi[name], val)
			continue
		}
		if _, dup := p.Values[name]; dup {
			return nil, fmt.Errorf("the argument --%s was provided more than once", name)
		}
		p.Values[name] = val
	}
	return p, nil
}
