package harness

import (
	"os"
	"testing"
	"time"
)

func TestProcessCPUGrows(t *testing.T) {
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until it shows: a few USER_HZ ticks, however busy the
	// machine is.
	var after time.Duration
	for range 1000 {
		x := 0
		for range 1_000_000 {
			x++
		}
		if after, err = ProcessCPU(os.Getpid()); err != nil || after > before {
			break
		}
	}
	if err != nil || after <= before {
		t.Errorf("CPU %s, %v after burning it, %s before: want it to grow", after, err, before)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU(-1) = nil error")
	}
}
