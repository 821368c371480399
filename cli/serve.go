package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/gitea"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

func serveCmd() *cobra.Command {
	var grace time.Duration
	var agent string
	cmd := &cobra.Command{
		Use:   "serve CONFIG",
		Short: "Run the pools until SIGTERM or SIGINT, then drain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			if agent == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the guest agent: %w", err)
				}
				agent = filepath.Join(filepath.Dir(exe), "fireactions-agent")
			}
			log := newLogger(cfg.Log, cmd.ErrOrStderr())
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return serve(ctx, cfg, agent, grace, log)
		},
	}
	cmd.Flags().DurationVar(&grace, "drain-grace", 10*time.Minute, "how long a drain waits for busy VMs")
	cmd.Flags().StringVar(&agent, "agent", "", "guest agent binary (default: fireactions-agent beside this binary)")
	return cmd
}

// serve wires the host together, runs the pools until ctx ends and drains.
func serve(ctx context.Context, cfg *config.Config, agent string, grace time.Duration, log *slog.Logger) error {
	prefix, err := netip.ParsePrefix(cfg.Network.CIDR)
	if err != nil {
		return fmt.Errorf("network.cidr: %w", err)
	}
	gw, err := netip.ParseAddr(cfg.Network.Gateway)
	if err != nil {
		return fmt.Errorf("network.gateway: %w", err)
	}
	bridge := netplan.Bridge{Name: cfg.Network.Bridge, Prefix: prefix, Gateway: gw, MTU: cfg.Network.MTU}
	if err := bridge.Ensure(); err != nil {
		return err
	}
	rules := netplan.Rules{Bridge: bridge.Name, Prefix: prefix.Masked(), NAT: *cfg.Network.NAT}
	if err := rules.Apply(ctx); err != nil {
		return err
	}
	defer func() {
		if err := rules.Remove(context.Background()); err != nil {
			log.Error("remove nftables table", "err", err)
		}
	}()
	if *cfg.Network.NAT {
		if err := netplan.EnableForwarding(); err != nil {
			return err
		}
	}

	store, err := vmstate.Open(filepath.Join(cfg.StateDir, "vms"))
	if err != nil {
		return err
	}
	boot, err := newBootFiles(cfg, agent, filepath.Join(cfg.StateDir, "pools"))
	if err != nil {
		return err
	}
	forges, err := connectForges(cfg)
	if err != nil {
		return err
	}
	hv, err := newHypervisor(ctx, cfg, log)
	if err != nil {
		return err
	}
	agentAddr := net.JoinHostPort(gw.String(), strconv.Itoa(cfg.Network.AgentPort))
	m, err := pool.New(pool.Deps{
		Config:     cfg,
		Forges:     forges,
		Hypervisor: hv,
		Network:    tapNetwork{bridge},
		Alloc:      netplan.NewAllocator(prefix, gw),
		Store:      store,
		Boot:       boot,
		Log:        log,
		ReportURL:  "http://" + agentAddr + "/agent/v1/report",
		ConsoleDir: filepath.Join(cfg.StateDir, "logs"),
	})
	if err != nil {
		return err
	}
	if err := m.Recover(ctx, pool.Leftovers{KillVM: killQEMU, TAPs: netplan.TAPs}); err != nil {
		log.Error("clean up after a previous run", "err", err)
	}

	ln, err := net.Listen("tcp", agentAddr)
	if err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	srv := &http.Server{Handler: m.AgentHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("agent listener", "err", err)
		}
	}()
	log.Info("serving", "pools", len(cfg.Pools), "bridge", bridge.Name, "agent_listener", agentAddr, "vmm", hv.Name())

	m.Run(ctx)

	log.Info("draining", "grace", grace)
	dctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	derr := m.Drain(dctx)
	_ = srv.Shutdown(context.Background())
	if derr != nil {
		log.Warn("drain forced", "err", derr)
		return derr
	}
	log.Info("drained")
	return nil
}

// connectForges builds one forge driver per pool (a pool's forge and scope).
func connectForges(cfg *config.Config) (map[string]forge.Forge, error) {
	byName := map[string]config.Forge{}
	for _, f := range cfg.Forges {
		byName[f.Name] = f
	}
	out := map[string]forge.Forge{}
	for _, p := range cfg.Pools {
		fc := byName[p.Forge]
		scope, err := config.ParseScope(p.Scope)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		switch fc.Type {
		case "gitea":
			f, err := gitea.New(gitea.Options{
				URL: fc.URL, GuestURL: fc.GuestURL, Token: fc.Token, CAFile: fc.CAFile,
				Scope:   gitea.Scope{Kind: scope.Kind, Org: scope.Org, Owner: scope.Owner, Repo: scope.Repo},
				Version: "fireactions-" + Version,
			})
			if err != nil {
				return nil, fmt.Errorf("pool %q: %w", p.Name, err)
			}
			out[p.Name] = f
		default:
			return nil, fmt.Errorf("pool %q: forge type %q has no driver in this build", p.Name, fc.Type)
		}
	}
	return out, nil
}

func newHypervisor(ctx context.Context, cfg *config.Config, log *slog.Logger) (*qemu.Driver, error) {
	if cfg.VMM.Driver != "qemu" {
		return nil, fmt.Errorf("vmm.driver %q has no driver in this build", cfg.VMM.Driver)
	}
	accel := qemu.Accel(cfg.VMM.QEMU.Accel)
	if accel == "auto" {
		var why string
		accel, why = qemu.DetectAccel(ctx, "/dev/kvm")
		log.Info("qemu acceleration detected", "accel", accel, "kvm", why)
	}
	return &qemu.Driver{Binary: cfg.VMM.QEMU.Binary, Accel: accel}, nil
}

// tapNetwork adapts the bridge to the manager's Network.
type tapNetwork struct{ b netplan.Bridge }

func (t tapNetwork) AddTAP(name string) error    { return t.b.AddTAP(name) }
func (t tapNetwork) DeleteTAP(name string) error { return netplan.DeleteTAP(name) }

// killQEMU ends a monitor a previous run left, if pid is still that VM's.
func killQEMU(ctx context.Context, id string, pid int) error {
	if !qemu.IsOurs(pid, id) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	for i := 0; i < 100 && qemu.IsOurs(pid, id); i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
