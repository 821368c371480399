package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Kept console logs go when older than keep, and, oldest first, when all
// of them together pass their byte budget: a job that fails its own VM at
// will cannot fill the disk within keep.
func TestConsoleLogsKeptWithinAgeAndBytes(t *testing.T) {
	now := time.Now()
	write := func(t *testing.T, dir, name string, size int, age time.Duration) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	left := func(t *testing.T, dir string) []string {
		t.Helper()
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}
	for _, tc := range []struct {
		name     string
		maxBytes int64
		want     []string
	}{
		{"within the budget, by age only", 1 << 20, []string{"b.log", "c.log", "d.log"}},
		{"past the budget, the oldest first", 250, []string{"c.log", "d.log"}},
		{"a budget smaller than the newest log", 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "a.log", 100, 25*time.Hour) // past keep
			write(t, dir, "b.log", 100, 3*time.Hour)
			write(t, dir, "c.log", 100, 2*time.Hour)
			write(t, dir, "d.log", 100, time.Hour)
			pruneConsoleDir(dir, 24*time.Hour, tc.maxBytes, now)
			if got := left(t, dir); !slices.Equal(got, tc.want) {
				t.Fatalf("left %v, want %v", got, tc.want)
			}
		})
	}
}
