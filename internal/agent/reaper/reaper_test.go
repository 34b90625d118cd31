package reaper

import (
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStartDeliversStatus(t *testing.T) {
	r := Default()
	cases := []struct {
		argv      []string
		code, sig int
	}{
		{[]string{"true"}, 0, 0},
		{[]string{"sh", "-c", "exit 7"}, 7, 0},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9, 9},
	}
	for _, c := range cases {
		cmd := exec.Command(c.argv[0], c.argv[1:]...)
		ch, err := r.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ws := <-ch:
			if code, sig := ExitCode(ws); code != c.code || sig != c.sig {
				t.Errorf("%q: code %d sig %d, want %d %d", c.argv, code, sig, c.code, c.sig)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: no status", c.argv)
		}
	}
}

func TestLateRegistration(t *testing.T) {
	r := New()
	r.deliver(4242, unix.WaitStatus(3<<8))
	select {
	case ws := <-r.Register(4242):
		if ws.ExitStatus() != 3 {
			t.Fatalf("status %v", ws)
		}
	default:
		t.Fatal("status reaped before registration was lost")
	}
	if len(r.unclaimed) != 0 || len(r.order) != 0 {
		t.Fatal("claimed status not forgotten")
	}
}

func TestUnclaimedBounded(t *testing.T) {
	r := New()
	for pid := 1; pid <= maxUnclaimed+10; pid++ {
		r.deliver(pid, 0)
	}
	if len(r.unclaimed) != maxUnclaimed {
		t.Fatalf("kept %d unclaimed statuses, want %d", len(r.unclaimed), maxUnclaimed)
	}
	if _, ok := r.unclaimed[1]; ok {
		t.Fatal("oldest status not evicted")
	}
}
