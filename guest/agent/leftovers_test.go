package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fakeProc is a /proc of processes by pid and real uid; a kill removes
// the process, and a process marked forking has a child in the next scan
// until it is killed, as a fork bomb does.
func fakeProc(t *testing.T, procs map[int]int) string {
	dir := t.TempDir()
	for pid, uid := range procs {
		writeStatus(t, dir, pid, uid)
	}
	must(t, os.MkdirAll(filepath.Join(dir, "self"), 0o755))
	return dir
}

func writeStatus(t *testing.T, dir string, pid, uid int) {
	must(t, os.MkdirAll(filepath.Join(dir, fmt.Sprint(pid)), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, fmt.Sprint(pid), "status"),
		fmt.Appendf(nil, "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid), 0o444))
}

func TestKillUserKillsEveryProcessOfTheUserAndNoOther(t *testing.T) {
	proc := fakeProc(t, map[int]int{1: 0, 40: 0, 41: 1000, 42: 1000, 43: 1001})
	next := 100
	var killed []int
	n := killUser(proc, 1000, func(pid int) error {
		killed = append(killed, pid)
		must(t, os.RemoveAll(filepath.Join(proc, fmt.Sprint(pid))))
		if pid == 41 && next < 103 { // 41 forked before it died: its children come up next
			writeStatus(t, proc, next, 1000)
			next++
		}
		return nil
	})
	slices.Sort(killed)
	if n != 3 || !slices.Equal(killed, []int{41, 42, 100}) {
		t.Fatalf("killed %d: %v; want 41, 42 and 41's child 100", n, killed)
	}
	if left := userProcesses(proc, 1000); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
	if others := userProcesses(proc, 1001); len(others) != 1 {
		t.Fatalf("another user's process was killed: %v", others)
	}
}

// A zombie of the user (dead, not reaped: the agent stops reaping when
// the runner has exited) is no leftover: a kill succeeds on it forever,
// so counting it kept the scan going until its time ran out.
func TestKillUserLeavesZombiesAlone(t *testing.T) {
	proc := fakeProc(t, map[int]int{41: 1000})
	must(t, os.MkdirAll(filepath.Join(proc, "44"), 0o755))
	must(t, os.WriteFile(filepath.Join(proc, "44", "status"),
		[]byte("Name:\tsleep\nState:\tZ (zombie)\nUid:\t1000\t1000\t1000\t1000\n"), 0o444))
	var killed []int
	n := killUser(proc, 1000, func(pid int) error {
		killed = append(killed, pid)
		if pid != 44 {
			must(t, os.RemoveAll(filepath.Join(proc, fmt.Sprint(pid))))
		}
		return nil // as the kernel answers for a zombie too
	})
	if n != 1 || !slices.Equal(killed, []int{41}) {
		t.Fatalf("killed %d: %v; want only the live process 41", n, killed)
	}
}
