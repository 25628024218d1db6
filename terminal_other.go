//go:build !linux

package main

import "os"

// fileIsTerminal reports whether f is a character device: a terminal,
// or /dev/null, from which a question reads no answer (no).
func fileIsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
