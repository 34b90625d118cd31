package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/textsafe"
)

func newVMPortsCommand(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:               "ports NAME",
		Short:             "List the guest's listening sockets with their NAME.vm endpoints",
		Args:              exactArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			ports := []api.Port{}
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/vms/"+url.PathEscape(args[0])+"/ports", nil, &ports); err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ports)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROTO\tADDRESS\tPORT\tPROCESS\tENDPOINT")
			for _, p := range ports {
				fmt.Fprint(tw, portRow(p))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// portRow is one line of the ports table. Protocol, address and process
// name are the guest's words: each is escaped onto one line, so it can
// neither act on the terminal nor add columns or rows to the table.
func portRow(p api.Port) string {
	proc := textsafe.Line(p.Process)
	if p.PID != 0 {
		proc = fmt.Sprintf("%s[%d]", proc, p.PID)
	}
	return fmt.Sprintf("%s\t%s\t%d\t%s\t%s\n", textsafe.Line(p.Proto), textsafe.Line(p.Addr), p.Port, proc, p.Endpoint)
}

// parseForward parses [ADDR:]HOSTPORT:GUESTPORT; ADDR defaults to 127.0.0.1.
func parseForward(spec string) (listen string, guestPort int, err error) {
	i := strings.LastIndexByte(spec, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("forward %q: want [ADDR:]HOSTPORT:GUESTPORT", spec)
	}
	gp, err := strconv.Atoi(spec[i+1:])
	if err != nil || gp < 1 || gp > 65535 {
		return "", 0, fmt.Errorf("forward %q: guest port must be 1-65535", spec)
	}
	host := spec[:i]
	addr, port := "127.0.0.1", host
	if j := strings.LastIndexByte(host, ':'); j >= 0 {
		addr, port = strings.Trim(host[:j], "[]"), host[j+1:]
	}
	hp, err := strconv.Atoi(port)
	if err != nil || hp < 0 || hp > 65535 {
		return "", 0, fmt.Errorf("forward %q: host port must be 0-65535", spec)
	}
	if net.ParseIP(addr) == nil {
		return "", 0, fmt.Errorf("forward %q: %q is not an IP address", spec, addr)
	}
	return net.JoinHostPort(addr, strconv.Itoa(hp)), gp, nil
}

func newVMForwardCommand(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "forward NAME [ADDR:]HOSTPORT:GUESTPORT",
		Short: "Forward a local port into the guest until interrupted",
		Long: "Listen on ADDR:HOSTPORT (default 127.0.0.1) and carry each connection to GUESTPORT on the\n" +
			"guest's loopback, through bangerd and the guest agent. No guest network is needed.",
		Args:              exactArgs(2),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			listen, guestPort, err := parseForward(args[1])
			if err != nil {
				return usageError{err}
			}
			ctx := cmd.Context()
			cl, err := e.client(ctx)
			if err != nil {
				return err
			}
			// Fail early on a stopped or unknown VM.
			var v api.VM
			if err := cl.Do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			ctx, stop := context.WithCancel(ctx)
			defer stop()
			go func() {
				<-ctx.Done()
				ln.Close()
			}()
			interrupted := notifyInterrupt(stop)
			defer interrupted()
			fmt.Fprintf(e.stderr, "forwarding %s -> %s:%d (Ctrl-C to stop)\n", ln.Addr(), v.Name, guestPort)
			var wg sync.WaitGroup
			defer wg.Wait()
			for {
				c, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
						return nil
					}
					return fmt.Errorf("accept: %w", err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					guest, br, err := cl.Connect(ctx, v.Name, "127.0.0.1:"+strconv.Itoa(guestPort))
					if err != nil {
						fmt.Fprintln(e.stderr, formatError(err))
						return
					}
					defer guest.Close()
					pipe(c, guest, br)
				}()
			}
		},
	}
	return c
}

// pipe copies both ways and half-closes so that request/response protocols
// see EOF in the right direction.
func pipe(local net.Conn, remote net.Conn, remoteR io.Reader) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(remote, local)
		if cw, ok := remote.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(local, remoteR)
		if cw, ok := local.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}
