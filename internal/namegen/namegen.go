// Package namegen validates VM names and makes friendly ones for VMs
// created without a name.
package namegen

import (
	"fmt"
	"math/rand/v2"
	"regexp"
)

var nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate reports whether name is a valid VM name: 1-63 characters of
// [a-z0-9-], not starting or ending with '-'. Names become hostnames and DNS
// labels, so they are never normalised: a bad name is refused.
func Validate(name string) error {
	if nameRe.MatchString(name) {
		return nil
	}
	switch {
	case name == "":
		return fmt.Errorf("name is empty")
	case len(name) > 63:
		return fmt.Errorf("name %q is %d characters; the limit is 63", name, len(name))
	default:
		return fmt.Errorf("name %q: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'", name)
	}
}

var adjectives = []string{
	"amber", "brave", "calm", "crisp", "dandy", "eager", "fancy", "gentle", "happy", "jolly",
	"keen", "lively", "mellow", "nimble", "proud", "quick", "rapid", "shiny", "sunny", "swift",
	"tidy", "vivid", "witty", "zesty", "bold", "cosy", "deft", "fresh", "merry", "noble",
}

var nouns = []string{
	"badger", "falcon", "otter", "heron", "lynx", "marten", "panda", "quokka", "raven", "tapir",
	"walrus", "yak", "bison", "crane", "dingo", "egret", "ferret", "gecko", "ibis", "koala",
	"lemur", "moose", "newt", "ocelot", "puffin", "robin", "stoat", "toucan", "viper", "wombat",
}

// Generate returns a random adjective-noun name, calling taken to avoid
// collisions (with a numeric suffix as the last resort).
func Generate(taken func(string) bool) string {
	for range 50 {
		n := adjectives[rand.IntN(len(adjectives))] + "-" + nouns[rand.IntN(len(nouns))]
		if !taken(n) {
			return n
		}
	}
	for i := 2; ; i++ {
		n := fmt.Sprintf("%s-%s-%d", adjectives[rand.IntN(len(adjectives))], nouns[rand.IntN(len(nouns))], i)
		if !taken(n) {
			return n
		}
	}
}
