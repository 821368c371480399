package agent

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The runner's leftovers are every process of its user once the runner
// itself has exited: a job that fork-bombs, or merely leaves daemons
// behind, would otherwise keep the guest's CPU and memory from the agent
// while it reports the runner's exit and powers the VM off. The job is
// over either way.
const (
	leftoverRounds = 200                  // a fork bomb refills between scans
	leftoverPause  = 5 * time.Millisecond // between scans
	leftoverMax    = 10 * time.Second     // then power-off ends the rest
)

// killUser SIGKILLs every process under procDir (a /proc) whose real uid is
// uid, scanning again until a scan finds none, or rounds or time run out.
// It returns how many it killed.
func killUser(procDir string, uid int, kill func(pid int) error) int {
	killed := 0
	deadline := time.Now().Add(leftoverMax)
	for round := 0; round < leftoverRounds && time.Now().Before(deadline); round++ {
		pids := userProcesses(procDir, uid)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if kill(pid) == nil {
				killed++
			}
		}
		time.Sleep(leftoverPause)
	}
	return killed
}

// userProcesses lists the live processes under procDir whose real uid is
// uid. Zombies are left out: they are dead already, and a kill "succeeds"
// on them, so a scan that counted them went on for leftoverMax after
// every job whose orphans the agent no longer reaps.
func userProcesses(procDir string, uid int) []int {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		if u, zombie := statusOf(filepath.Join(procDir, e.Name(), "status")); u == uid && !zombie {
			out = append(out, pid)
		}
	}
	return out
}

// statusOf reads a /proc/<pid>/status file: the first value of its Uid:
// line (-1 when unreadable), and whether its State: is Z (zombie).
func statusOf(status string) (uid int, zombie bool) {
	b, err := os.ReadFile(status)
	if err != nil {
		return -1, false
	}
	uid = -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("State:")); ok {
			zombie = bytes.HasPrefix(bytes.TrimSpace(rest), []byte("Z"))
		}
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Uid:")); ok {
			if f := bytes.Fields(rest); len(f) > 0 {
				if n, err := strconv.Atoi(string(f[0])); err == nil {
					uid = n
				}
			}
			return uid, zombie // State: comes before Uid:
		}
	}
	return uid, zombie
}
