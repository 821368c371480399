// Command guestinit is the /init of the driver's real-boot tests: it says
// it is up on the serial console, waits guestsleep seconds if the kernel
// command line says so (and says it slept), then ends the VM the way the guest agent does (a
// reset, which ends Firecracker), or powers off when it says
// guestinit=poweroff.
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	fmt.Printf("guestinit: up, mode=%q\n", os.Getenv("guestinit"))
	if n, err := strconv.Atoi(os.Getenv("guestsleep")); err == nil {
		time.Sleep(time.Duration(n) * time.Second)
		fmt.Printf("guestinit: slept %ds\n", n)
	}
	syscall.Sync()
	if os.Getenv("guestinit") == "poweroff" {
		_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	} else {
		_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	}
	for {
		time.Sleep(time.Hour)
	}
}
