// Command banger is the banger CLI: one-command development sandboxes on
// microVMs. It talks only to bangerd.
package main

import (
	"os"

	"banger/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
