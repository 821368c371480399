package netplan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DeadGroup is the interface group TAPs wait in to be deleted. Deleting a
// network device costs one RCU grace period in the kernel (~15 ms here,
// whatever the device); deleting a whole group costs one for all of them.
const DeadGroup = 0xfa0de1

// Retire takes a TAP out of service at once — down, off the bridge, into
// DeadGroup — and leaves the slow deletion to a Reaper. A TAP that is
// already gone is not an error.
func Retire(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("tap %s: look up: %w", name, err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("tap %s: down: %w", name, err)
	}
	if err := netlink.LinkSetNoMaster(link); err != nil {
		return fmt.Errorf("tap %s: leave bridge: %w", name, err)
	}
	if err := netlink.LinkSetGroup(link, DeadGroup); err != nil {
		return fmt.Errorf("tap %s: retire: %w", name, err)
	}
	return nil
}

// ReapDead deletes every retired TAP in one kernel operation.
func ReapDead() error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(DeadGroup)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete retired taps: %w", err)
	}
	return nil
}

// Reap deletes retired TAPs every interval until ctx ends, and once more
// then.
func Reap(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := ReapDead(); err != nil {
				onErr(err)
			}
			return
		case <-t.C:
			if err := ReapDead(); err != nil {
				onErr(err)
			}
		}
	}
}
