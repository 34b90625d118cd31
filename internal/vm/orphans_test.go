package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/privop"
	"banger/internal/store"
)

// tapHelper is a fakeHelper whose ledger holds taps, reported by ping.
type tapHelper struct {
	fakeHelper
	taps  []string
	asked []string // every tap delete_tap was asked for, valid or not
}

func (f *tapHelper) Call(ctx context.Context, op privop.Op) (json.RawMessage, *os.File, error) {
	if _, ok := op.(privop.Ping); ok {
		b, err := json.Marshal(privop.PingResult{Taps: f.taps})
		return b, nil, err
	}
	if d, ok := op.(privop.DeleteTap); ok {
		f.asked = append(f.asked, d.Tap)
	}
	return f.fakeHelper.Call(ctx, op)
}

// withHelperNet gives svc guest networking through fh and a log the test
// reads.
func withHelperNet(t *testing.T, svc *Service, fh HelperClient) *bytes.Buffer {
	t.Helper()
	n, err := newNetwork(NetworkOptions{Helper: fh, Bridge: "br-fc", Subnet: "172.16.0.0/24", MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	svc.net, svc.log = n, slog.New(slog.NewTextHandler(&buf, nil))
	return &buf
}

func opsNamed(ops []string, name string) []string {
	var out []string
	for _, o := range ops {
		if strings.HasPrefix(o, name+" ") {
			out = append(out, o)
		}
	}
	return out
}

func TestRemoveOrphanTapsKeepsLiveVMsTaps(t *testing.T) {
	svc, st, _ := newTestService(t)
	ctx := context.Background()
	base := store.VM{ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x", VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	running := base
	running.ID, running.Name, running.State = "aaaaaaaa1111", "live", api.StateRunning
	running.Runtime = store.Runtime{VMM: "fake", PID: 1, Tap: tapName(running.ID)}
	stopped := base
	stopped.ID, stopped.Name, stopped.State = "cccccccc3333", "idle", api.StateStopped
	for _, v := range []store.VM{running, stopped} {
		if err := st.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	// The running VM's tap, one left by a VM deleted in a crash, one of a
	// stopped VM, and a name no banger tap has (never to be deleted).
	fh := &tapHelper{taps: []string{"tap-fc-aaaaaaaa", "tap-fc-bbbbbbbb", "tap-fc-cccccccc", "eth0"}}
	logs := withHelperNet(t, svc, fh)

	svc.removeOrphanTaps(ctx)

	got := opsNamed(fh.ops, "delete_tap")
	want := []string{`delete_tap {"tap":"tap-fc-bbbbbbbb"}`, `delete_tap {"tap":"tap-fc-cccccccc"}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("deleted taps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// bangerd never asks the helper to delete a name that is not a banger
	// tap, whatever the helper reported.
	if strings.Join(fh.asked, ",") != "tap-fc-bbbbbbbb,tap-fc-cccccccc" {
		t.Fatalf("delete_tap asked for %v", fh.asked)
	}
	// The firewall is rebuilt once, after the deletions, so the helper
	// drops the rules of the taps it no longer holds.
	fw := opsNamed(fh.ops, "apply_firewall")
	if len(fw) != 1 {
		t.Fatalf("apply_firewall sent %d times, want once: %v", len(fw), fh.ops)
	}
	if last := fh.ops[len(fh.ops)-1]; !strings.HasPrefix(last, "apply_firewall ") {
		t.Fatalf("last op = %q, want apply_firewall after the deletions", last)
	}
	for _, tap := range []string{"tap-fc-bbbbbbbb", "tap-fc-cccccccc"} {
		if !strings.Contains(logs.String(), "removed orphaned tap "+tap+": no VM holds it") {
			t.Errorf("no log line for %s:\n%s", tap, logs)
		}
	}
	if strings.Contains(logs.String(), "removed orphaned tap tap-fc-aaaaaaaa") {
		t.Errorf("running vm's tap logged as removed:\n%s", logs)
	}
}

// Reconcile, which bangerd runs at start-up, is what removes them.
func TestReconcileRemovesOrphanTaps(t *testing.T) {
	svc, _, _ := newTestService(t)
	fh := &tapHelper{taps: []string{"tap-fc-dead0001"}}
	logs := withHelperNet(t, svc, fh)
	if err := svc.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := opsNamed(fh.ops, "delete_tap"); len(got) != 1 || got[0] != `delete_tap {"tap":"tap-fc-dead0001"}` {
		t.Fatalf("delete_tap ops = %v, want the orphan's", got)
	}
	if !strings.Contains(logs.String(), "removed orphaned tap tap-fc-dead0001: no VM holds it") {
		t.Fatalf("removal not logged:\n%s", logs)
	}
}

// With nothing orphaned, start-up sends the helper nothing but the ping.
func TestRemoveOrphanTapsNothingToDo(t *testing.T) {
	svc, _, _ := newTestService(t)
	fh := &tapHelper{}
	withHelperNet(t, svc, fh)
	svc.removeOrphanTaps(context.Background())
	if len(fh.ops) != 0 {
		t.Fatalf("ops sent = %v, want none", fh.ops)
	}
}
