package main

import (
	"net"
	"os"
	"strings"
)

// sdNotify tells systemd (a Type=notify unit) the server's state: "READY=1" once it
// serves, "RELOADING=1" and "READY=1" around a reload, "STOPPING=1" when it stops. It
// does nothing outside such a unit (no NOTIFY_SOCKET), and a failure to tell is not the
// server's failure: it is returned for the log.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
