package imagestore

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// TestMain runs the test binary as the child process of
// TestKilledPullLeavesNothingUsable when asked to.
func TestMain(m *testing.M) {
	if dir := os.Getenv("FA_CRASH_STORE"); dir != "" {
		crashChild(dir, os.Getenv("FA_CRASH_REF"))
	}
	os.Exit(m.Run())
}

// crashChild pulls, and stops for good after the first layer is applied,
// so its parent can kill it mid-flatten.
func crashChild(dir, ref string) {
	s, err := Open(Options{Dir: dir})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	s.afterLayer = func(i int) {
		fmt.Println("LAYER-APPLIED")
		time.Sleep(time.Hour)
	}
	_, err = s.Pull(ctxBackground(), ref, PullIfNotPresent, nil)
	fmt.Println("the pull was meant to be killed; it returned", err)
	os.Exit(2)
}

func TestKilledPullLeavesNothingUsable(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	reg := startRegistry(t)
	var layers = testLayers(t)
	ref := reg.host + "/crash/img:v1"
	digest := hosttest.PushImage(t, reg.host, "crash/img:v1", emptyConfig(), hosttest.Layer(t, layers[0]), hosttest.Layer(t, layers[1]), hosttest.Layer(t, layers[2]))
	dir := tempStoreDir(t)

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "FA_CRASH_STORE="+dir, "FA_CRASH_REF="+ref)
	out, err := child.StdoutPipe()
	must(t, err)
	must(t, child.Start())
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "LAYER-APPLIED") {
				line <- sc.Text()
				return
			}
		}
		close(line)
	}()
	select {
	case _, ok := <-line:
		if !ok {
			child.Wait()
			t.Fatal("the child ended without reaching the first layer")
		}
	case <-time.After(60 * time.Second):
		child.Process.Kill()
		t.Fatal("the child did not reach the first layer within 60s")
	}
	must(t, child.Process.Signal(syscall.SIGKILL))
	child.Wait()

	// The crash left a half-flattened tree in a temporary directory...
	left, _ := filepath.Glob(filepath.Join(dir, "tmp", "pull-*", "rootfs", "etc", "passwd"))
	if len(left) != 1 {
		t.Fatalf("expected the killed pull's partial tree, found %v", left)
	}
	if dirs, _ := os.ReadDir(filepath.Join(dir, "images")); len(dirs) != 0 {
		t.Fatalf("the killed pull left an image: %v", dirs)
	}

	// ...which a later run neither uses nor trips over, and removes.
	s := openStore(t, dir, "")
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Fatalf("leftovers after Open: %v", tmp)
	}
	if _, err := s.Pull(ctxBackground(), ref, PullNever, nil); !IsNotPresent(err) {
		t.Fatalf("Never after the crash: %v, want not present", err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Fatalf("list after the crash: %v, %v", list, err)
	}
	im, err := s.Pull(ctxBackground(), ref, PullIfNotPresent, nil)
	if err != nil || im.Digest != digest {
		t.Fatalf("pull after the crash: %v, %v", im, err)
	}
	compareTree(t, mountImage(t, im.Path(), im.FSType), wantTree(), false)
}

// A live pull's temporary directory is locked: another process opening
// the store leaves it alone.
func TestOpenLeavesLivePullsAlone(t *testing.T) {
	dir := tempStoreDir(t)
	s := openStore(t, dir, "")
	tmp, err := s.newTemp()
	must(t, err)
	openStore(t, dir, "")
	if _, err := os.Stat(tmp.path); err != nil {
		t.Fatalf("Open removed a live pull's directory: %v", err)
	}
	tmp.lock.Close()
	openStore(t, dir, "")
	if _, err := os.Stat(tmp.path); !os.IsNotExist(err) {
		t.Fatalf("Open kept a dead pull's directory: %v", err)
	}
}
