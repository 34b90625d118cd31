package main

import (
	"fmt"
	"net"
	"os"
)

// notifyReady tells systemd the helper serves (Type=notify): bangerd's
// unit is ordered after this one, and systemd starts it only once the
// socket exists. With Type=simple, a restart of both let bangerd ask for
// a socket that was not there yet, and it ran with guest networking off.
// Outside systemd (NOTIFY_SOCKET unset) it does nothing.
func notifyReady() error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' { // an abstract socket
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}
