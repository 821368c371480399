//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// testNetns is a private network namespace the test owns: Gitea, the
// orchestrator and its VMs live in it, and nothing leaks to the host's.
type testNetns struct {
	name string
	ns   netns.NsHandle
}

func newNetns(t *testing.T, name string) *testNetns {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", name).Run()
	run(t, "ip", "netns", "add", name)
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n := &testNetns{name: name, ns: h}
	t.Cleanup(func() {
		h.Close()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	return n
}

// command runs name inside the namespace.
func (n *testNetns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// dial opens a TCP connection from inside the namespace: the socket is
// created on a thread switched into it.
func (n *testNetns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked (and so discarded) if switching back
		// fails; on success it is unlocked below.
		orig, err := netns.Get()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			ch <- result{nil, fmt.Errorf("enter netns: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// listen opens a listening socket inside the namespace (created on a
// thread switched into it): a server in the test process then serves
// clients in the namespace, such as the orchestrator and the guests.
func (n *testNetns) listen(network, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			ch <- result{nil, fmt.Errorf("enter netns: %w", err)}
			return
		}
		l, err := net.Listen(network, addr)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

// httpClient talks to servers inside the namespace.
func (n *testNetns) httpClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{DialContext: n.dial, DisableKeepAlives: true},
	}
}

// links lists the namespace's network devices.
func (n *testNetns) links(t *testing.T) []string {
	out, err := exec.Command("ip", "-n", n.name, "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var _ = os.Getenv

// inNetns runs f on a thread switched into ns (netlink, nftables and
// processes started from it live there).
func inNetns(t *testing.T, ns *testNetns, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.ns); err != nil {
			errc <- err
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
