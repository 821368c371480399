//go:build !amd64

package qemu

// readTSC: a host without x86's time-stamp counter has none to read.
func readTSC() (uint64, bool) { return 0, false }
