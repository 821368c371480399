package config

// networkPolicy checks the isolation settings of the network section.
func (v *validator) networkPolicy(f field, n *Network) {
	for i, p := range n.AllowTCPPorts {
		v.check(rule{f.child("allow_tcp_ports").index(i), between(p, 1, 65535)})
	}
	for i, p := range n.AllowUDPPorts {
		v.check(rule{f.child("allow_udp_ports").index(i), between(p, 1, 65535)})
	}
	v.check(
		rule{f.child("new_conn_per_second"), notNegative(n.NewConnPerSecond)},
		rule{f.child("kbytes_per_second"), notNegative(n.KBytesPerSecond)},
	)
}
