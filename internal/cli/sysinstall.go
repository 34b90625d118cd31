package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/api/client"
	"banger/internal/execx"
	"banger/internal/installmeta"
	"banger/internal/sysrun"
)

// systemctl runs the host's systemctl.
type systemctl struct{}

func (systemctl) Run(ctx context.Context, args ...string) ([]byte, error) {
	return execx.Default.Run(ctx, "systemctl", args...)
}

func newSystemInstallCommands(e *env) []*cobra.Command {
	var o sysrun.InstallOptions
	var printUnits bool
	install := &cobra.Command{
		Use:   "install --owner USER",
		Short: "Install banger as two systemd services: the root helper and the owner's bangerd",
		Long: `Install (as root) the banger binaries to /usr/local/lib/banger (banger is linked into
/usr/local/bin), write /etc/banger/install.toml naming the owner, and write, enable and
start bangerd-root.service (the root helper, with only the capabilities its operations
need) and bangerd.service (the owner's daemon, with none). It returns once both sockets
answer. Running it again refreshes binaries, metadata and units and restarts both services;
VMs keep running. --print-units prints the two unit files instead, changing nothing.

The metadata pins what the helper takes from no request: the firecracker and jailer
binaries, the VMM uid range, and the bridge subnet (--subnet), which is refused when the
host already has an address or route in it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Owner == "" {
				return usageError{errors.New("--owner USER is required: the normal user bangerd runs as")}
			}
			if printUnits {
				return sysrun.PrintUnits(e.stdout, o)
			}
			o.Out, o.Systemctl = e.stdout, systemctl{}
			return sysrun.Install(cmd.Context(), o)
		},
	}
	install.Flags().StringVar(&o.Owner, "owner", "", "the normal user bangerd runs as (required)")
	install.Flags().BoolVar(&printUnits, "print-units", false, "print both unit files as they would be written, and change nothing")
	pinFlags(install.Flags(), &o.Pins)

	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the installed services, versions, owner, sockets and the helper's operations",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := sysrun.GetStatus(cmd.Context(), sysrun.InstallOptions{Systemctl: systemctl{}})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, st)
			}
			w := e.stdout
			fmt.Fprintf(w, "owner        %s (uid %d), installed %s, version %s (%s)\n", st.Meta.OwnerUser, st.Meta.OwnerUID,
				st.Meta.InstalledAt.Format("2006-01-02 15:04:05Z07:00"), st.Meta.Version, st.Meta.Commit)
			fmt.Fprintf(w, "subnet       %s (the bridge's, pinned by root)\n", st.Meta.BridgeSubnet())
			for _, u := range []string{"bangerd-root.service", "bangerd.service"} {
				fmt.Fprintf(w, "unit         %-22s %s\n", u, st.Units[u])
			}
			answer := func(ok bool, version, errText string) string {
				if ok {
					return "answers, version " + version
				}
				return "not answering: " + errText
			}
			fmt.Fprintf(w, "helper       %s: %s\n", st.HelperSocket, answer(st.HelperAnswers, st.HelperVersion, st.HelperErr))
			fmt.Fprintf(w, "bangerd      %s: %s\n", st.DaemonSocket, answer(st.DaemonAnswers, st.DaemonVersion, st.DaemonErr))
			if len(st.HelperOps) > 0 {
				fmt.Fprintf(w, "helper ops   %s\n", strings.Join(st.HelperOps, " "))
			}
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")

	restart := &cobra.Command{
		Use:   "restart",
		Short: "Restart both services (VMs keep running) and wait until they answer",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sysrun.Restart(cmd.Context(), sysrun.InstallOptions{Systemctl: systemctl{}})
		},
	}

	var purge, force bool
	uninstall := &cobra.Command{
		Use:   "uninstall [--purge] [--force]",
		Short: "Stop and remove both services, the metadata, sockets and binaries (--purge: state too)",
		Long: `Remove what 'banger system install' installed: both units, the install metadata, the
runtime directories and the binaries; --purge also removes bangerd's state and cache and the
helper's state. Running VMs make it refuse, naming them, unless --force stops them first.
The owner's home (configuration, SSH material) is never touched.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := sysrun.InstallOptions{Systemctl: systemctl{}, Out: e.stdout}
			cl := client.New(filepath.Join(sysrun.SystemLayout("/").RuntimeDir, "bangerd.sock"), "", "")
			if meta, err := installmeta.Read(installmeta.DefaultPath); err == nil {
				cl.PeerUID = meta.OwnerUID // bangerd runs as the owner
			}
			vms := daemonVMs{cl: cl}
			return sysrun.Uninstall(cmd.Context(), o, vms, purge, force)
		},
	}
	uninstall.Flags().BoolVar(&purge, "purge", false, "also remove state and cache (VM disks, images, kernels)")
	uninstall.Flags().BoolVar(&force, "force", false, "stop running VMs instead of refusing")
	return []*cobra.Command{install, status, restart, uninstall}
}

// daemonVMs is the installed bangerd as uninstall needs it.
type daemonVMs struct{ cl *client.Client }

func (d daemonVMs) Running(ctx context.Context) ([]string, error) {
	var vms []api.VM
	if err := d.cl.Do(ctx, http.MethodGet, "/v1/vms", nil, &vms); err != nil {
		return nil, err
	}
	var out []string
	for _, v := range vms {
		if v.State == api.StateRunning || v.State == api.StateStarting {
			out = append(out, v.Name)
		}
	}
	return out, nil
}

func (d daemonVMs) Stop(ctx context.Context, names []string) error {
	for _, n := range names {
		if err := d.cl.Do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(n)+"/stop", nil, nil); err != nil {
			return fmt.Errorf("stop %s: %w", n, err)
		}
	}
	return nil
}
