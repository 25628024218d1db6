//go:build !linux

package ws

import (
	"errors"
	"sync"

	"go.uber.org/zap"
)

// poller is Linux-only (epoll); elsewhere every connection is read by a
// goroutine of its own (conn.goRead), which costs an idle connection a
// goroutine stack but behaves the same.
type poller struct{}

var errNoPoller = errors.New("no poller on this platform")

func newPoller(*sync.WaitGroup, *zap.Logger) *poller { return &poller{} }

func (*poller) add(*conn) error { return errNoPoller }
func (*poller) remove(*conn)    {}
func (*poller) rearm(*conn)     {}

// epollSet stands in for the Linux type in conn.
type epollSet struct{}

func (*conn) readNow([]byte) (int, error) { return 0, errNoPoller }

// havePoller: idle connections here are watched by the poller.
const havePoller = false
