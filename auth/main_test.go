package auth

import (
	"testing"

	"go.uber.org/goleak"
)

// The JWKS refresher and fetches must be gone when their tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
