//go:build !linux

package intake

import "errors"

// Without epoll every connection is read by a goroutine of its own
// (goRead); epollSet stands in for the Linux type in Poller.
type epollSet struct{}

var errNoEpoll = errors.New("no epoll on this platform")

func (*Poller) add(*Reader) error { return errNoEpoll }
func (*Poller) remove(*Reader)    {}

// readOp is Linux's; elsewhere the pool is never used.
type readOp struct{}

func newReadOp() *readOp { return &readOp{} }

// readJob is Linux's.
type readJob struct{}
