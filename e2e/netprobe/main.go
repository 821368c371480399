// Command netprobe runs inside a test guest and tries what a hostile job
// would: reach the internet, the other guests, host ports, and send with a
// forged address. It prints one line per check, "NETPROBE name
// ok|blocked|error detail", for the isolation test to compare with what
// must happen: "error" is a check that could not be set up (a spoof the
// probe failed to arrange), never to be read as "blocked". It is
// installed setuid root in the test guest so it can change its own
// address, as a job with sudo could.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Check is one attempt.
type Check struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // tcp, ping, spoof-ip, spoof-mac
	Addr string `json:"addr"` // host:port for tcp; ip for ping; the target for spoof
	// Forge is the address or MAC to take for a spoof check.
	Forge string `json:"forge,omitempty"`
}

// Plan is the probe's input file.
type Plan struct {
	Listen  string `json:"listen"`  // a TCP port peers try to reach
	Go      string `json:"go"`      // URL that answers 2xx once every guest is up
	Gateway string `json:"gateway"` // default route
	// GoWait bounds the wait for the start signal, in seconds (default
	// 300); without the signal no check runs and the probe fails.
	GoWait int     `json:"go_wait_s,omitempty"`
	Checks []Check `json:"checks"`
}

func main() {
	if err := syscall.Setresuid(0, 0, 0); err != nil {
		fmt.Println("NETPROBE setup blocked", err)
	}
	_ = syscall.Setresgid(0, 0, 0)
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Println("NETPROBE setup blocked", err)
		os.Exit(1)
	}
	var plan Plan
	if err := json.Unmarshal(b, &plan); err != nil {
		fmt.Println("NETPROBE setup blocked", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", plan.Listen)
	if err != nil {
		fmt.Println("NETPROBE listen blocked", err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	fmt.Println("NETPROBE listening ok", plan.Listen)
	wait := time.Duration(plan.GoWait) * time.Second
	if wait <= 0 {
		wait = 5 * time.Minute
	}
	waited, err := waitForGo(plan.Go, wait)
	if err != nil {
		fmt.Printf("NETPROBE go blocked %v\n", err)
		fmt.Println("NETPROBE done error")
		os.Exit(1)
	}
	fmt.Printf("NETPROBE go ok after %.1fs\n", waited.Seconds())
	for _, c := range plan.Checks {
		word, detail := run(c, plan)
		fmt.Printf("NETPROBE %s %s %s\n", c.Name, word, detail)
	}
	fmt.Println("NETPROBE done ok")
}

// waitForGo polls url until it answers 2xx (the host's start signal), at
// most limit.
func waitForGo(url string, limit time.Duration) (time.Duration, error) {
	c := &http.Client{Timeout: time.Second}
	start := time.Now()
	last := "no answer"
	for time.Since(start) < limit {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return time.Since(start), nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return 0, fmt.Errorf("no start signal from %s within %s (last: %s)", url, limit, last)
}

// Results of a check.
const (
	ok      = "ok"
	blocked = "blocked"
	failed  = "error" // the check could not be set up
)

func run(c Check, plan Plan) (string, string) {
	switch c.Kind {
	case "tcp":
		return dial(c.Addr)
	case "ping":
		out, err := exec.Command("/bin/busybox", "ping", "-c", "2", "-W", "2", c.Addr).CombinedOutput()
		word := ok
		if err != nil {
			word = blocked
		}
		return word, strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " | ")
	case "spoof-ip":
		return spoofIP(c, plan)
	case "spoof-mac":
		return spoofMAC(c, plan)
	}
	return failed, "unknown check kind " + c.Kind
}

// dial tries a TCP connection a few times: the first SYN after link-up
// is sometimes dropped, and a blocked port must stay blocked anyway.
func dial(addr string) (string, string) {
	var err error
	for i := 0; i < 3; i++ {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			return ok, "connected"
		}
	}
	return blocked, err.Error()
}

func ip(args ...string) error {
	out, err := exec.Command("/bin/busybox", append([]string{"ip"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// spoofIP sends from another address on the same subnet, then restores.
// A set-up that fails is an error, not a block.
func spoofIP(c Check, plan Plan) (string, string) {
	own := ownAddr()
	if err := ip("addr", "add", c.Forge, "dev", "eth0"); err != nil {
		return failed, err.Error()
	}
	defer ip("addr", "del", c.Forge, "dev", "eth0")
	forged := strings.Split(c.Forge, "/")[0]
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(forged)}}
	conn, err := d.Dial("tcp", c.Addr)
	if err == nil {
		conn.Close()
		return ok, "connected from " + forged + " (own " + own + ")"
	}
	if strings.Contains(err.Error(), "bind") {
		return failed, err.Error() // the forged address could not be used
	}
	return blocked, err.Error()
}

// spoofMAC takes another MAC, tries the target, then restores. A set-up
// that fails (the MAC not taken, the link not up) is an error.
func spoofMAC(c Check, plan Plan) (string, string) {
	iface, err := net.InterfaceByName("eth0")
	if err != nil {
		return failed, err.Error()
	}
	orig := iface.HardwareAddr.String()
	restore := func() {
		ip("link", "set", "eth0", "down")
		ip("link", "set", "eth0", "address", orig)
		ip("link", "set", "eth0", "up")
		ip("route", "add", "default", "via", plan.Gateway)
	}
	if err := ip("link", "set", "eth0", "down"); err != nil {
		return failed, err.Error()
	}
	if err := ip("link", "set", "eth0", "address", c.Forge); err != nil {
		restore()
		return failed, err.Error()
	}
	if err := ip("link", "set", "eth0", "up"); err != nil {
		restore()
		return failed, err.Error()
	}
	ip("route", "add", "default", "via", plan.Gateway)
	// The neighbour cache must be relearned under the new MAC.
	ip("neigh", "flush", "dev", "eth0")
	if now, err := net.InterfaceByName("eth0"); err != nil || !strings.EqualFold(now.HardwareAddr.String(), c.Forge) {
		restore()
		return failed, "eth0 did not take the forged MAC " + c.Forge
	}
	word, detail := dial(c.Addr)
	restore()
	return word, detail
}

func ownAddr() string {
	iface, err := net.InterfaceByName("eth0")
	if err != nil {
		return "?"
	}
	addrs, _ := iface.Addrs()
	if len(addrs) == 0 {
		return "?"
	}
	return addrs[0].String()
}
