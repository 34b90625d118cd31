package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"banger/internal/installmeta"
	"banger/internal/netdev/netdevtest"
	"banger/internal/privop"
	"banger/internal/privop/client"
	"banger/internal/testutil"
)

// newNetns creates a network namespace without moving the test into it and
// returns a path naming it while the handle is open.
func newNetns(t *testing.T) string {
	t.Helper()
	errc := make(chan error, 1)
	var ns netns.NsHandle
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if ns, err = netns.New(); err != nil {
			errc <- err
			return
		}
		errc <- netns.Set(orig)
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

func TestRunRefusesExtraArgs(t *testing.T) {
	if err := run(context.Background(), []string{"extra"}); err == nil {
		t.Error("run accepted a positional argument")
	}
}

// TestHelperInNetns runs the real helper (netdev, ledger, socket) inside a
// namespace the test creates and drives it through the daemon's client:
// bridge, tap, tap fd, firewall, refusals, cleanup, then no leaks.
func TestHelperInNetns(t *testing.T) {
	testutil.RequireRoot(t)
	netdevtest.GuardHostNamespace(t)
	nsPath := newNetns(t)
	base, err := os.MkdirTemp("", "bhc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	meta := filepath.Join(base, "install.toml")
	if err := installmeta.Write(meta, installmeta.Meta{OwnerUser: "owner", OwnerUID: 4242, OwnerGID: 4242, OwnerHome: "/home/owner", Subnet: "172.30.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(base, "run", "helper.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--socket", sock, "--install-meta", meta, "--state-dir", filepath.Join(base, "state"), "--netns", nsPath})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		netdevtest.AssertNoLeaks(t, nsPath)
	})

	c := client.New(sock)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	var ping privop.PingResult
	for {
		if ping, err = c.Ping(cctx); err == nil {
			break
		}
		if cctx.Err() != nil {
			t.Fatalf("helper never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ping.OwnerUID != 4242 || ping.PeerUID != 0 {
		t.Errorf("ping = %+v", ping)
	}
	for _, op := range []privop.Op{
		privop.EnsureBridge{Bridge: "br-fc", Gateway: "172.30.0.1/24", MTU: 1500},
		privop.CreateTap{Tap: "tap-fc-t1", Bridge: "br-fc", MTU: 1500, IP: "172.30.0.2"},
		privop.ApplyFirewall{Bridge: "br-fc", Subnet: "172.30.0.0/24", Gateway: "172.30.0.1", DNSPorts: []int{53}, VMToVM: true},
	} {
		if err := c.Do(cctx, op, nil); err != nil {
			t.Fatalf("%s: %v", op.Name(), err)
		}
	}
	f, err := c.OpenTap(cctx, "tap-fc-t1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("tap fd is not a character device: %v, %v", fi, err)
	}
	f.Close()

	// Refusals: not in the ledger, not banger names.
	var e *privop.Error
	if err := c.Do(cctx, privop.DeleteTap{Tap: "tap-fc-zz"}, nil); !errors.As(err, &e) || e.Code != privop.CodeForbidden {
		t.Errorf("delete of a tap banger did not create: %v", err)
	}
	if err := c.Do(cctx, privop.DeleteTap{Tap: "eth0"}, nil); err == nil {
		t.Error("delete of eth0 accepted")
	}

	for _, op := range []privop.Op{privop.DeleteTap{Tap: "tap-fc-t1"}, privop.ClearFirewall{}, privop.DeleteBridge{Bridge: "br-fc"}} {
		if err := c.Do(cctx, op, nil); err != nil {
			t.Fatalf("%s: %v", op.Name(), err)
		}
	}
}
