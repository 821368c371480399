package vmstate

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// BenchmarkCreateBurst: 1,000 goroutines each create a VM's record at
// once, then save it once (the booting write): the store's part of a
// burst of VM starts. Keep TMPDIR on the normal disk.
// Run: go test -run '^$' -bench CreateBurst -benchtime 3x ./vmstate
func BenchmarkCreateBurst(b *testing.B) {
	const vms = 1000
	var total, cpu time.Duration
	var syncs atomic.Int64
	old := syncFile
	syncFile = func(f *os.File) error { syncs.Add(1); return old(f) }
	b.Cleanup(func() { syncFile = old })
	for n := 0; n < b.N; n++ {
		s, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		syncs.Store(0)
		start, cpu0 := time.Now(), hosttest.CPUTime(b)
		var wg sync.WaitGroup
		errs := make(chan error, vms)
		for i := 0; i < vms; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("%012x", i)
				if err := s.Create(&Record{ID: id, Pool: "p", Phase: Creating, AgentToken: "t"}); err != nil {
					errs <- err
					return
				}
				if err := s.Save(&Record{ID: id, Pool: "p", Phase: Booting, PID: 1000 + i}); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		elapsed, used := time.Since(start), hosttest.CPUTime(b)-cpu0
		total += elapsed
		cpu += used
		b.Logf("%d creates and saves in %s: %.0f VMs/s; %.0f µs CPU per VM; %.2f fsyncs per VM", vms, elapsed.Round(time.Millisecond),
			vms/elapsed.Seconds(), float64(used.Microseconds())/vms, float64(syncs.Load())/vms)
	}
	b.ReportMetric(float64(vms*b.N)/total.Seconds(), "vms/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(vms*b.N), "cpu-µs/vm")
}
