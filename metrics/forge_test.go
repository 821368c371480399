package metrics

import (
	"context"
	"errors"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// plainForge is a driver that cannot fail jobs; failingForge can.
type plainForge struct{ forge.Forge }

func (plainForge) Kind() string { return "plain" }

type failingForge struct {
	plainForge
	failed []string
}

func (f *failingForge) FailJob(_ context.Context, r forge.RunnerRef, job, reason string) error {
	f.failed = append(f.failed, r.Name+"/"+job+": "+reason)
	return nil
}

// TestWrappedForgeKeepsItsWayToFailJobs: the pool finds a driver's
// FailJob through the metrics wrapper, and learns when there is none.
func TestWrappedForgeKeepsItsWayToFailJobs(t *testing.T) {
	m := New(t.TempDir())
	inner := &failingForge{}
	f, ok := m.Forge("gitea", inner).(forge.JobFailer)
	if !ok {
		t.Fatal("the wrapper hides the driver's FailJob")
	}
	if err := f.FailJob(context.Background(), forge.RunnerRef{ID: "1", Name: "r"}, "42", "runner died"); err != nil {
		t.Fatal(err)
	}
	if len(inner.failed) != 1 || inner.failed[0] != "r/42: runner died" {
		t.Fatalf("driver saw %q", inner.failed)
	}
	plain := m.Forge("other", plainForge{}).(forge.JobFailer)
	if err := plain.FailJob(context.Background(), forge.RunnerRef{ID: "1"}, "42", "x"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("a driver without FailJob: err %v, want ErrUnsupported", err)
	}
}
