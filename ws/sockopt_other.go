//go:build !linux

package ws

import (
	"net"
	"time"
)

// setUserTimeout is Linux-only; elsewhere the kernel's own retransmission
// limit applies, and delivery confirmation still ends a dead connection.
func setUserTimeout(net.Conn, time.Duration) error { return nil }
