package fleet

import (
	"os"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

// TestMain lets this test binary serve a NATS cluster in a child process
// (fleettest.RunClusterProcess) for the benchmarks' CPU figures.
func TestMain(m *testing.M) {
	fleettest.ServeClusterIfAsked()
	os.Exit(m.Run())
}
