package daemon

import (
	"bytes"
	"context"
	"encoding/json"
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
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/netplan"
	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// agentBinary is the guest agent: configured, or beside this binary.
func agentBinary(cfg *config.Config) (string, error) {
	if cfg.AgentPath != "" {
		return cfg.AgentPath, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the guest agent: %w", err)
	}
	return filepath.Join(filepath.Dir(exe), "fireactions-agent"), nil
}

// serve wires the host together, runs the pools until ctx ends and drains.
func serve(ctx context.Context, opts Options, cfg *config.Config, log *slog.Logger) error {
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
	rules := hostRules(cfg, bridge)
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
	agent, err := agentBinary(cfg)
	if err != nil {
		return err
	}
	boot, err := newBootFiles(cfg, agent, filepath.Join(cfg.StateDir, "pools"))
	if err != nil {
		return err
	}
	// Opened now, pulled only after Recover (see below).
	roots, err := openImageRoots(cfg, log)
	if err != nil {
		return err
	}
	defer roots.Close()
	// One driver per configured forge, one scope of it per pool.
	drivers, forges, err := connectForges(cfg, opts.Version)
	if err != nil {
		return err
	}
	hv, err := newHypervisor(ctx, cfg, log)
	if err != nil {
		return err
	}
	mx := metrics.New(cfg.StateDir)
	for _, p := range cfg.Pools {
		forges[p.Name] = mx.Forge(p.Forge, p.Name, forges[p.Name])
		mx.PoolSeries(p.Name, p.Forge)
	}
	fl, err := joinFleet(ctx, cfg, mx, log)
	if err != nil {
		return err
	}
	defer leaveFleet(fl) // after the drain
	warm := warmStartDeps(cfg, agent, mx)
	agentAddr := net.JoinHostPort(gw.String(), strconv.Itoa(cfg.Network.AgentPort))
	consoleDir := filepath.Join(cfg.StateDir, "logs")
	m, err := pool.New(pool.Deps{
		Config:      cfg,
		Forges:      forges,
		Hypervisor:  hv,
		Network:     tapNetwork{bridge, rules},
		Alloc:       netplan.NewAllocator(prefix, gw),
		Store:       store,
		Boot:        boot,
		Roots:       roots,
		Log:         log,
		ReportURL:   "http://" + agentAddr + "/agent/v1/report",
		ConsoleDir:  consoleDir,
		Interval:    cfg.ReconcileInterval,
		Observer:    mx,
		Fleet:       claimer(fl),
		TemplateDir: warm.TemplateDir,
		Agent:       warm.Agent,
		WarmStarts:  warm.WarmStarts,
	})
	if err != nil {
		return err
	}
	mx.WatchPools(m)

	// Listeners stop when the drain is over, not when the signal comes:
	// agents of busy VMs still report, operators still watch.
	lctx, stopListeners := context.WithCancel(context.Background())
	var listeners sync.WaitGroup
	defer func() { stopListeners(); listeners.Wait() }()
	listen := func(name string, f func(context.Context) error) {
		listeners.Add(1)
		go func() {
			defer listeners.Done()
			if err := f(lctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("listener failed", "listener", name, "err", err)
			}
		}()
	}
	ln, err := net.Listen("tcp", agentAddr)
	if err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	// Every guest reaches the agent listener: timeouts, and a cap per
	// guest (source address) as well as in all.
	agentLim := serverLimits(cfg.Limits, cfg.Limits.AgentConnsPerSource)
	listen("agent", func(ctx context.Context) error {
		return serveHTTP(ctx, ln, m.AgentHandler(), agentLim, log.With("listener", "agent"))
	})
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", mx.Handler())
		metricsLim := serverLimits(cfg.Limits, cfg.Limits.APIConnsPerSource)
		listen("metrics", func(ctx context.Context) error {
			return serveHTTP(ctx, mln, mux, metricsLim, log.With("listener", "metrics"))
		})
	}
	apiOpts := api.Options{Backend: m, Webhooks: drivers.webhooks(mx), Tokens: cfg.API.Tokens, Log: log,
		WebhookMaxBody: cfg.Limits.WebhookMaxBody, WebhookBuffer: cfg.Limits.WebhookBuffer, Insights: mx,
		Fleet: statusFleet(fl)}
	if cfg.API.Socket != "" {
		h := api.NewHandler(apiOpts, false)
		listen("api-socket", func(ctx context.Context) error { return api.ServeUnix(ctx, cfg.API.Socket, h) })
	}
	if cfg.API.Listen != "" {
		h := api.NewHandler(apiOpts, true)
		listen("api-tcp", func(ctx context.Context) error {
			return api.ServeTCP(ctx, cfg.API.Listen, h, cfg.API.TLSCertFile, cfg.API.TLSKeyFile,
				serverLimits(cfg.Limits, cfg.Limits.APIConnsPerSource))
		})
	}
	// Recovery after the listeners: a failed listen must not leave
	// adopted VMs without their rules.
	// Each VMM driver reaps its own monitors (vmm.Reaper).
	leftovers := pool.Leftovers{TAPs: bridge.TAPs}
	if a, ok := hv.(vmm.Adopter); ok {
		leftovers.Adopt = a.Adopt
	}
	if r, ok := hv.(vmm.Reaper); ok {
		leftovers.KillVM = r.Reap
	}
	if err := m.Recover(ctx, leftovers); err != nil {
		log.Error("clean up after a previous run", "err", err)
	}
	// The pools' images are pulled only now, after Recover: a pull evicts
	// the least recently used images no one leases past images.max_bytes
	// (and the refresh pulls again), and until Recover has adopted the VMs
	// a previous run left, nothing leases their images: an older digest
	// after a tag moved would go. A failure here leaves the adopted VMs'
	// monitors running for the next start to adopt again.
	if err := roots.start(ctx, cfg.Images.Refresh); err != nil {
		return err
	}
	listen("tap-reaper", func(ctx context.Context) error {
		netplan.Reap(ctx, time.Second, func(err error) { log.Error("reap retired taps", "err", err) })
		return nil
	})
	go pruneConsoleLogs(ctx, consoleDir, cfg.ConsoleLogs.Keep, int64(cfg.ConsoleLogs.KeepMaxMiB)<<20, log)
	go reloadOnHUP(ctx, opts, cfg, m, boot, mx, drivers, log)
	go watchdog(ctx, log)
	log.Info("serving", "pools", len(cfg.Pools), "bridge", bridge.Name, "agent_listener", agentAddr, "vmm", hv.Name())
	_, _ = sd.SdNotify(false, sd.SdNotifyReady)

	m.Run(ctx)

	_, _ = sd.SdNotify(false, sd.SdNotifyStopping)
	log.Info("draining", "grace", cfg.DrainGrace)
	if err := drainThenQuiesce(m, drivers, cfg.DrainGrace, log); err != nil {
		log.Warn("drain forced: busy VMs were ended", "err", err)
		return err
	}
	log.Info("drained")
	return nil
}

// quiesceTimeout bounds the drivers' winding down after the drain (a
// GitHub scale-set session's DELETE); it has its own time, so a drain
// that used all of its grace does not leave the sessions open.
const quiesceTimeout = 20 * time.Second

// drainer is what drainThenQuiesce needs of the pool manager.
type drainer interface {
	Drain(ctx context.Context) error
}

// drainThenQuiesce drains the pools within grace, then winds the
// drivers' listeners down within quiesceTimeout of their own, and
// returns the drain's error (a forced drain).
func drainThenQuiesce(m drainer, drivers *forgeSet, grace time.Duration, log *slog.Logger) error {
	dctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := m.Drain(dctx)
	qctx, qcancel := context.WithTimeout(context.Background(), quiesceTimeout)
	defer qcancel()
	drivers.quiesce(qctx, log)
	return err
}

// reloadOnHUP re-reads the configuration on SIGHUP and applies its pools:
// added, changed and removed without touching unaffected VMs; the images
// of new or changed image pools are pulled before their VMs start. A bad
// file, or an image that cannot be pulled, changes nothing. Settings
// outside the pools need a restart.
func reloadOnHUP(ctx context.Context, opts Options, running *config.Config, m *pool.Manager, boot *bootFiles, mx *metrics.Metrics, drivers *forgeSet, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		_, _ = sd.SdNotify(false, sd.SdNotifyReloading)
		if err := reload(ctx, opts, running, m, boot, mx, drivers, log); err != nil {
			log.Error("reload refused; the running configuration stays", "err", err)
		}
		_, _ = sd.SdNotify(false, sd.SdNotifyReady)
	}
}

func reload(ctx context.Context, opts Options, running *config.Config, m *pool.Manager, boot *bootFiles, mx *metrics.Metrics, drivers *forgeSet, log *slog.Logger) error {
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return err
	}
	a, b := *running, *cfg
	a.Pools, b.Pools = nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		log.Warn("reload applies pool changes only; restart for the other changed settings (network, vmm, forges and their tokens, api, …)")
	}
	// The running drivers hand out the new pools' scopes (a forge added
	// gets its driver, but its webhooks wait for a restart); whatever the
	// outcome, the scopes the pools do not use then take no more demand.
	defer func() { drivers.retain(m.Forges()) }()
	forges, fresh, err := drivers.connect(cfg, log)
	if err != nil {
		return err
	}
	for _, p := range cfg.Pools {
		forges[p.Name] = mx.Forge(p.Forge, p.Name, forges[p.Name])
		mx.PoolSeries(p.Name, p.Forge)
	}
	// The new boot archives are written first but put in use only once
	// the manager took the new pools (their images pulled): a refused
	// reload leaves the running pools their archives.
	staged, err := boot.stage(cfg)
	if err != nil {
		return err
	}
	if _, err := m.Reload(ctx, cfg.Pools, forges); err != nil {
		staged.abort()
		return err
	}
	configured := map[string]string{}
	for _, p := range cfg.Pools {
		configured[p.Name] = p.Forge
	}
	mx.RetainRateLimits(configured)
	// The forges added now are the set's only once their pools are taken:
	// a refused reload leaves no driver built from its settings.
	drivers.adopt(fresh)
	staged.commit()
	return nil
}

// serveHTTP serves h on ln within lim until ctx ends.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, lim httpguard.Limits, log *slog.Logger) error {
	return httpguard.Serve(ctx, ln, h, lim, 5*time.Second, log)
}

// serverLimits are the configured limits of one listener, with its cap of
// connections per source address.
func serverLimits(l config.Limits, perSource int) httpguard.Limits {
	return httpguard.Limits{
		ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout,
		MaxConns: l.MaxConns, MaxConnsPerSource: perSource,
	}
}

// watchdog pings systemd's watchdog at half its interval, when enabled.
func watchdog(ctx context.Context, log *slog.Logger) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := sd.SdNotify(false, sd.SdNotifyWatchdog); err != nil {
				log.Warn("systemd watchdog", "err", err)
			}
		}
	}
}

// hostRules is the nftables policy for the bridge: what guests may reach
// on the host (the agent port, DNS on the gateway, configured ports) and
// the isolation settings.
func hostRules(cfg *config.Config, b netplan.Bridge) netplan.Rules {
	n := cfg.Network
	tcp := append([]int{n.AgentPort}, n.AllowTCPPorts...)
	udp := append([]int(nil), n.AllowUDPPorts...)
	for _, d := range n.DNS {
		if d == b.Gateway.String() {
			tcp, udp = append(tcp, 53), append(udp, 53)
			break
		}
	}
	return netplan.Rules{
		Bridge: b.Name, Prefix: b.Prefix.Masked(), Gateway: b.Gateway, NAT: *n.NAT,
		HostTCP: tcp, HostUDP: udp, BlockPrivate: n.BlockPrivate,
		NewConnPerSecond: n.NewConnPerSecond, KBytesPerSecond: n.KBytesPerSecond,
	}
}

// tapNetwork adapts the bridge and its rules to the manager's Network.
type tapNetwork struct {
	b     netplan.Bridge
	rules netplan.Rules
}

func (t tapNetwork) AddTAP(name string) error    { return t.b.AddTAP(name) }
func (t tapNetwork) DeleteTAP(name string) error { return netplan.Retire(name) }

func (t tapNetwork) Admit(tap, mac string, ip netip.Addr) error {
	return t.rules.AddVM(netplan.VM{TAP: tap, MAC: mac, IP: ip})
}

func (t tapNetwork) Expel(tap, mac string, ip netip.Addr) error {
	return t.rules.RemoveVM(netplan.VM{TAP: tap, MAC: mac, IP: ip})
}
