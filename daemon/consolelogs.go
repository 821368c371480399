package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// pruneConsoleLogs keeps the console logs of failed VMs in dir within
// their budget, once a minute until ctx ends (see pruneConsoleDir).
func pruneConsoleLogs(ctx context.Context, dir string, keep time.Duration, maxBytes int64, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		for _, name := range pruneConsoleDir(dir, keep, maxBytes, time.Now()) {
			log.Debug("console log pruned", "file", name)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneConsoleDir deletes the kept console logs older than keep, then the
// oldest of the rest until they take at most maxBytes together: a guest
// can fail its own VM at will, and each failure keeps a log. It returns
// the names of the files it deleted.
func pruneConsoleDir(dir string, keep time.Duration, maxBytes int64, now time.Time) []string {
	entries, _ := os.ReadDir(dir)
	type kept struct {
		name string
		size int64
		mod  time.Time
	}
	var files []kept
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		files = append(files, kept{e.Name(), info.Size(), info.ModTime()})
		total += info.Size()
	}
	// Oldest first; names break ties so the order is the same each time.
	slices.SortFunc(files, func(a, b kept) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	var pruned []string
	for _, f := range files {
		if now.Sub(f.mod) <= keep && total <= maxBytes {
			break
		}
		if err := os.Remove(filepath.Join(dir, f.name)); err == nil || os.IsNotExist(err) {
			pruned = append(pruned, f.name)
			total -= f.size
		}
	}
	return pruned
}
