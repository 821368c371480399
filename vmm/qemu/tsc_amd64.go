package qemu

// rdtsc reads the host CPU's time-stamp counter.
func rdtsc() uint64

// readTSC is rdtsc: amd64 hosts have one.
func readTSC() (uint64, bool) { return rdtsc(), true }
