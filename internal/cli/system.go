package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"banger/internal/installmeta"
	"banger/internal/sysrun"
)

// runSupervisor is sysrun.Run; tests replace it to check the options the
// flags produce without starting anything.
type runSupervisor func(context.Context, sysrun.Options) error

func newSystemCommand(e *env, run runSupervisor) *cobra.Command {
	c := &cobra.Command{
		Use:   "system",
		Short: "Run banger's root helper and daemon on this host",
	}
	c.AddCommand(newSystemRunCommand(e, run))
	c.AddCommand(newSystemInstallCommands(e)...)
	return c
}

func newSystemRunCommand(e *env, run runSupervisor) *cobra.Command {
	var o sysrun.Options
	c := &cobra.Command{
		Use:   "run --owner USER",
		Short: "Run the root helper and the owner's bangerd in the foreground (as root, without systemd)",
		Long: `Run the root helper (as root) and bangerd (as the owner) in the foreground, for
hosts without systemd such as containers and CI. Must run as root. It writes the
install metadata naming the owner and pinning the bridge subnet (--subnet, refused
when the host, or --netns, already has an address or route in it), starts banger-helper and bangerd from the
directory of this banger binary, waits until both answer and prints one line
saying so. Both log to stderr, prefixed "helper: " and "bangerd: ".

SIGINT or SIGTERM stops bangerd, then the helper, and exits 0; VMs keep running
and are adopted by the next bangerd. A child that exits on its own is logged and
started again after 1s, doubling to 30s while it keeps crashing; the other keeps
running, and bangerd waits for the helper to answer. While it is installed, the
owner's banger never starts a bangerd of its own on this one's socket.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Owner == "" {
				return usageError{errors.New("--owner USER is required: the normal user bangerd runs as")}
			}
			if err := o.Validate(); err != nil {
				return usageError{err}
			}
			o.Out, o.Log = e.stdout, e.stderr
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Owner, "owner", "", "the normal user bangerd runs as (required)")
	f.StringVar(&o.Netns, "netns", "", "run the helper's network ops inside this network namespace (e.g. /run/netns/NAME)")
	f.StringVar(&o.HelperSocket, "helper-socket", sysrun.DefaultHelperSocket, "the helper's unix socket (its directory is made root-owned)")
	f.StringVar(&o.InstallMeta, "install-meta", installmeta.DefaultPath, "install metadata to write")
	f.StringVar(&o.HelperStateDir, "state-dir", sysrun.DefaultHelperStateDir, "the helper's root-owned state directory")
	f.StringVar(&o.JailBase, "jail-base", "", "where the helper stages Firecracker jails: root-owned, on a filesystem that allows device nodes (default: STATE-DIR/jail)")
	pinFlags(f, &o.Pins)
	return c
}

// pinFlags adds the flags that pin what root runs for Firecracker VMs and
// the bridge subnet.
func pinFlags(f *pflag.FlagSet, p *sysrun.Pins) {
	f.StringVar(&p.FirecrackerBin, "firecracker-bin", installmeta.DefaultFirecrackerBin, "the firecracker binary the helper runs (root's, not setuid; pinned in the install metadata)")
	f.StringVar(&p.JailerBin, "jailer-bin", installmeta.DefaultJailerBin, "the jailer binary the helper runs (root's, not setuid; pinned in the install metadata)")
	f.StringVar(&p.Subnet, "subnet", installmeta.DefaultSubnet, fmt.Sprintf("the bridge subnet (private IPv4, /%d to /%d) the helper gives banger's bridge; one the host already uses is refused (pinned in the install metadata)", installmeta.MinSubnetBits, installmeta.MaxSubnetBits))
	f.IntVar(&p.VMMUIDBase, "vmm-uid-base", installmeta.DefaultVMMUIDBase, fmt.Sprintf("first of the %d uids (and gids) firecracker processes run as, one per VM; no account may use them", installmeta.VMMUIDCount))
}
