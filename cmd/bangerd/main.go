// Command bangerd is banger's owner-user daemon: it owns VM state and
// orchestration and serves the CLI on a unix socket.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"

	"banger/internal/daemon"
	"banger/internal/paths"
	"banger/internal/version"
)

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	agent := flag.String("agent", "", "guest agent binary (default: banger-agent next to bangerd)")
	flag.Parse()
	if *showVersion {
		fmt.Println("bangerd " + version.String())
		return
	}
	// Everything bangerd creates (state, sockets, VMM children's files) is
	// private to the owner.
	syscall.Umask(0o077)
	layout, err := paths.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		os.Exit(1)
	}
	if err := daemon.Run(daemon.RunOptions{Layout: layout, AgentBin: *agent}); err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		if errors.Is(err, daemon.ErrAlreadyRunning) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}
