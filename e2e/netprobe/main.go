// Command netprobe runs inside a test guest and tries what a hostile job
// would: reach the internet, the other guests, host ports, and send with a
// forged address. It prints one line per check, "NETPROBE name ok|blocked
// detail", for the isolation test to compare with what must happen. It is
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
	Listen  string  `json:"listen"`  // a TCP port peers try to reach
	Go      string  `json:"go"`      // URL that answers 200 once every guest is up
	Gateway string  `json:"gateway"` // default route
	Checks  []Check `json:"checks"`
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
	waitForGo(plan.Go)
	for _, c := range plan.Checks {
		ok, detail := run(c, plan)
		word := "blocked"
		if ok {
			word = "ok"
		}
		fmt.Printf("NETPROBE %s %s %s\n", c.Name, word, detail)
	}
	fmt.Println("NETPROBE done ok")
}

func waitForGo(url string) {
	c := &http.Client{Timeout: time.Second}
	for i := 0; i < 600; i++ {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func run(c Check, plan Plan) (bool, string) {
	switch c.Kind {
	case "tcp":
		return dial(c.Addr)
	case "ping":
		out, err := exec.Command("/bin/busybox", "ping", "-c", "2", "-W", "2", c.Addr).CombinedOutput()
		return err == nil, strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " | ")
	case "spoof-ip":
		return spoofIP(c, plan)
	case "spoof-mac":
		return spoofMAC(c, plan)
	}
	return false, "unknown check kind " + c.Kind
}

// dial tries a TCP connection a few times: the first SYN after link-up
// is sometimes dropped, and a blocked port must stay blocked anyway.
func dial(addr string) (bool, string) {
	var err error
	for i := 0; i < 3; i++ {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			return true, "connected"
		}
	}
	return false, err.Error()
}

func ip(args ...string) error {
	out, err := exec.Command("/bin/busybox", append([]string{"ip"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// spoofIP sends from another address on the same subnet, then restores.
func spoofIP(c Check, plan Plan) (bool, string) {
	own := ownAddr()
	if err := ip("addr", "add", c.Forge, "dev", "eth0"); err != nil {
		return false, err.Error()
	}
	defer ip("addr", "del", c.Forge, "dev", "eth0")
	forged := strings.Split(c.Forge, "/")[0]
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(forged)}}
	conn, err := d.Dial("tcp", c.Addr)
	if err == nil {
		conn.Close()
		return true, "connected from " + forged + " (own " + own + ")"
	}
	return false, err.Error()
}

// spoofMAC takes another MAC, tries the target, then restores.
func spoofMAC(c Check, plan Plan) (bool, string) {
	iface, err := net.InterfaceByName("eth0")
	if err != nil {
		return false, err.Error()
	}
	orig := iface.HardwareAddr.String()
	restore := func() {
		ip("link", "set", "eth0", "down")
		ip("link", "set", "eth0", "address", orig)
		ip("link", "set", "eth0", "up")
		ip("route", "add", "default", "via", plan.Gateway)
	}
	if err := ip("link", "set", "eth0", "down"); err != nil {
		return false, err.Error()
	}
	if err := ip("link", "set", "eth0", "address", c.Forge); err != nil {
		restore()
		return false, err.Error()
	}
	ip("link", "set", "eth0", "up")
	ip("route", "add", "default", "via", plan.Gateway)
	// The neighbour cache must be relearned under the new MAC.
	ip("neigh", "flush", "dev", "eth0")
	ok, detail := dial(c.Addr)
	restore()
	return ok, detail
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
