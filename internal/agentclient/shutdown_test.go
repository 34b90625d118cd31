package agentclient_test

import (
	"context"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agentclient"
	"banger/internal/testutil"
)

// TestShutdownAndReboot: Shutdown asks the guest to power off and Reboot
// to restart, which is how a VMM that survives a power-off is stopped.
func TestShutdownAndReboot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		call   func(*agentclient.Session, context.Context) error
		reboot bool
	}{
		{"shutdown", (*agentclient.Session).Shutdown, false},
		{"reboot", (*agentclient.Session).Reboot, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked := make(chan bool, 1)
			hostEnd, guestEnd := testutil.SocketPair(t)
			srv := &agent.Server{Mode: agent.ModeService, Version: "test", Shutdown: func(reboot bool) { asked <- reboot }}
			served := make(chan struct{})
			go func() {
				defer close(served)
				defer guestEnd.Close()
				_ = srv.ServeConn(guestEnd)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := agentclient.Handshake(ctx, hostEnd)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.call(s, ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-asked:
				if got != tc.reboot {
					t.Errorf("the guest was asked reboot=%v, want %v", got, tc.reboot)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the guest was never asked to shut down")
			}
			_ = s.Close()
			<-served
		})
	}
}
