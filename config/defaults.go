package config

import "time"

// Defaults is the one place default values live. Load fills every field the
// file leaves empty from it; docs print it.
func Defaults() Config {
	nat := true
	return Config{
		StateDir:          "/var/lib/fireactions",
		DrainGrace:        10 * time.Minute,
		ReconcileInterval: 2 * time.Second,
		Log:               Log{Level: "info", Format: "text"},
		API:               API{Socket: "/run/fireactions/api.sock"},
		Metrics:           Metrics{Listen: "127.0.0.1:9464"},
		ConsoleLogs:       ConsoleLogs{Keep: 24 * time.Hour, MaxKiB: 1024, KeepMaxMiB: 1024},
		Network: Network{
			Bridge:    "fireactions0",
			CIDR:      "10.200.0.0/24",
			MTU:       1500,
			NAT:       &nat,
			AgentPort: 8089,
		},
		Images: imagesDefaults(),
		Limits: limitsDefaults(),
		VMM: VMM{
			Driver:      "qemu",
			QEMU:        QEMU{Binary: "qemu-system-x86_64", Accel: "auto"},
			Firecracker: firecrackerDefaults(),
		},
	}
}

// PoolDefaults are the defaults of every pool.
func PoolDefaults() Pool {
	return Pool{
		Scope:   "instance",
		MinIdle: 0,
		Max:     1,
		VM: VMShape{
			VCPUs:      1,
			MemoryMiB:  512,
			PullPolicy: defaultPullPolicy,
			DiskMiB:    defaultDiskMiB,
		},
		Runner: RunnerOptions{
			User:          "runner",
			UID:           1000,
			FetchInterval: time.Second,
		},
		Timeouts: Timeouts{
			Boot: 2 * time.Minute,
			Idle: 10 * time.Minute,
			Job:  3 * time.Hour,
		},
	}
}
