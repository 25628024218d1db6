package ws

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT on the socket: the kernel gives up
// on a peer that has not acknowledged sent data for d, instead of
// retransmitting for about 15 minutes, so a dead connection ends about
// when delivery confirmation gives up on it.
func setUserTimeout(nc net.Conn, d time.Duration) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	}); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("setsockopt TCP_USER_TIMEOUT: %w", serr)
	}
	return nil
}
