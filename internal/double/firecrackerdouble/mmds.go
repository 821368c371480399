package firecrackerdouble

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// Firecracker's MMDS configuration faults, word for word.
const (
	faultMMDSNoIfaces   = "The list of network interface IDs that allow forwarding MMDS requests is empty."
	faultMMDSBadIface   = "The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface."
	faultMMDSNotLinkLoc = "The MMDS IPv4 address is not link local."
)

// MMDSConfig is an accepted PUT /mmds/config, with Firecracker's defaults
// filled in.
type MMDSConfig struct {
	Version           string   `json:"version"`
	NetworkInterfaces []string `json:"network_interfaces"`
	IPv4Address       string   `json:"ipv4_address"`
	IMDSCompat        bool     `json:"imds_compat"`
}

// MMDS is what the double holds of the MMDS: the configuration and the
// data store as last PUT (nil when none was). The guest cannot read it
// (QEMU boots the guest; nothing answers on the MMDS address), so tests
// inspect it here or in the request record.
type MMDS struct {
	Config *MMDSConfig
	Data   json.RawMessage
}

// MMDS returns the MMDS configuration and data store accepted so far.
func (s *Server) MMDS() MMDS {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out MMDS
	if s.mmds.Config != nil {
		c := *s.mmds.Config
		c.NetworkInterfaces = append([]string(nil), c.NetworkInterfaces...)
		out.Config = &c
	}
	if s.mmds.Data != nil {
		out.Data = append(json.RawMessage(nil), s.mmds.Data...)
	}
	return out
}

// putMMDSConfig checks a (schema-valid) MMDS configuration as Firecracker
// does: at least one interface, each already configured, and a link-local
// address other than 169.254.0.x and 169.254.255.x.
func (s *Server) putMMDSConfig(body []byte) error {
	c := MMDSConfig{Version: "V1", IPv4Address: "169.254.169.254"}
	if err := json.Unmarshal(body, &c); err != nil {
		return err
	}
	if len(c.NetworkInterfaces) == 0 {
		return errors.New(faultMMDSNoIfaces)
	}
	for _, id := range c.NetworkInterfaces {
		if !s.hasNIC(id) {
			return errors.New(faultMMDSBadIface)
		}
	}
	addr, err := netip.ParseAddr(c.IPv4Address)
	if err != nil || !addr.Is4() {
		return fmt.Errorf("%sipv4_address: invalid IPv4 address syntax.", bodyErrorPrefix)
	}
	if b := addr.As4(); b[0] != 169 || b[1] != 254 || b[2] == 0 || b[2] == 255 {
		return errors.New(faultMMDSNotLinkLoc)
	}
	s.mmds.Config = &c
	return nil
}

// putMMDS replaces the data store; the schema has made sure it is an
// object, and the payload limit that it fits the store's default limit.
func (s *Server) putMMDS(body []byte) error {
	if len(body) == 0 {
		return errors.New("firecrackerdouble: PUT /mmds without a body is not modelled")
	}
	s.mmds.Data = append(json.RawMessage(nil), body...)
	return nil
}

func (s *Server) hasNIC(id string) bool {
	for _, n := range s.vm.NICs {
		if n.ID == id {
			return true
		}
	}
	return false
}
