package consumer

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A clustered stream's "duplicate message id is in process" is a racing
// replay, however it is wrapped; other errors are not.
func TestRacing(t *testing.T) {
	inProcess := &jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"}
	if !racing(fmt.Errorf("nats: %w", inProcess)) {
		t.Error("10158 not seen as racing")
	}
	for _, err := range []error{
		&jetstream.APIError{Code: 503, ErrorCode: 10039},
		jetstream.ErrNoStreamResponse,
		errors.New("duplicate message id is in process"),
	} {
		if racing(err) {
			t.Errorf("%v seen as racing", err)
		}
	}
}
