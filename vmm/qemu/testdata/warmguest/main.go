// Command warmguest is the /init of the QEMU driver's warm-start test: it
// loads the virtio-serial and virtio-net modules, prints what the template
// holds before it is saved (its interface's MAC), says it waits, and once
// restored reads its identity (agentproto.Identity) with the agent's own
// functions, reseeds the RNG, sets the clock and the MAC as the agent does
// (neither reseed nor MAC when the identity has none: the test's control)
// and then acknowledges it,
// prints what a sibling restore must not share, and resets (which ends
// QEMU), after idling a minute when its hostname is "idle" (the
// benchmark's memory figure, the secret test's memory dump).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/guest/agent"
	"golang.org/x/sys/unix"
)

func main() {
	say := func(f string, a ...any) { fmt.Fprintf(os.Stdout, "warmguest: "+f+"\n", a...) }
	defer unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for _, m := range []struct{ src, fs, dst string }{{"proc", "proc", "/proc"}, {"sys", "sysfs", "/sys"}, {"dev", "devtmpfs", "/dev"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			say("mount %s: %v", m.dst, err)
		}
	}
	order, _ := os.ReadFile("/mod/order")
	for _, name := range strings.Fields(string(order)) {
		f, err := os.Open("/mod/" + name)
		if err == nil {
			if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
				say("load %s: %v", name, err)
			}
			f.Close()
		}
	}
	var dev string
	for i := 0; i < 200; i++ {
		var err error
		if dev, err = agent.IdentityDevice("/"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	say("template mac=%s", mac())
	say("waiting for identity on %q", dev)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	line, answer, err := agent.ReadIdentityLine(ctx, dev)
	if err != nil {
		say("identity: %v", err)
		return
	}
	var id agentproto.Identity
	if err := json.Unmarshal(line, &id); err != nil {
		answer(false)
		say("identity: %v", err)
		return
	}
	if len(id.Seed) > 0 {
		if err := agent.Reseed(id.Seed); err != nil {
			answer(false)
			say("%v", err)
			return
		}
	}
	if err := agent.SetClock(id.Now); err != nil {
		say("%v", err)
	}
	if id.MAC != "" {
		if err := agent.SetMAC("eth0", id.MAC); err != nil {
			say("%v", err)
		}
	}
	// Answered as the agent does, once the identity is applied.
	if err := answer(true); err != nil {
		say("%v", err)
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	uuid, _ := os.ReadFile("/proc/sys/kernel/random/uuid")
	say("vm=%s mac=%s boot_id=%s uuid=%s clock=%d", id.Config.VMID, mac(), strings.TrimSpace(string(boot)), strings.TrimSpace(string(uuid)), time.Now().Unix())
	if id.Config.Root != nil {
		rootProbe(say, id.Config.VMID, *id.Config.Root)
	}
	if id.Config.Hostname == "idle" { // the benchmark measures an idle VM's memory
		time.Sleep(time.Minute)
	}
}

// mac is eth0's address as the kernel has it, waiting up to 5 s for the
// interface to appear.
func mac() string {
	for i := 0; i < 250; i++ {
		if b, err := os.ReadFile("/sys/class/net/eth0/address"); err == nil {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "none"
}
