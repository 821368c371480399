// Package fleet lets several orchestrator hosts share one demand through
// NATS JetStream, so that no queued job boots a VM on more than one host.
// Before a host counts a queued job as its own demand it claims the job:
// a compare-and-set create of the job's key in a KV bucket whose
// entries age out after the claim TTL (the bucket's MaxAge). The holder
// rewrites its claims every TTL/3 (a CAS update on the revision it
// holds), so a dead or cut-off host's claims lapse within the TTL and
// another host may take the job. A host also holds a presence key of its
// host_id, which refuses a second host of the same id and carries the
// host's load per pool (free room, idle VMs: Publish), which the other
// hosts follow with a KV watch to leave a job to a better placed host
// for a bounded time (Elsewhere).
//
// A bucket-wide MaxAge with revision CAS, not per-key TTLs, because it
// works with every JetStream server (Debian's nats-server 2.9 has no
// per-message TTL, added in 2.11) and one fleet has one claim TTL anyway:
// Join refuses a host whose claim_ttl differs from the bucket's.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket names of a fleet's state.
const (
	ClaimsBucket = "fireactions_claims"
	HostsBucket  = "fireactions_hosts"
)

// Errors a caller may tell apart.
var (
	// ErrUnreachable: this host cannot reach NATS (or lost its place in
	// the fleet); it claims nothing new.
	ErrUnreachable = errors.New("fleet: NATS unreachable: claiming nothing new")
	// ErrHostIDTaken: another live host holds this host_id.
	ErrHostIDTaken = errors.New("fleet: another live host uses this host_id")
)

// Observer is told of claims for metrics; every method must be cheap.
type Observer interface {
	ClaimWon()
	ClaimLost()
	ClaimExpired()
	FleetReachable(bool)
}

type nopObserver struct{}

func (nopObserver) ClaimWon()           {}
func (nopObserver) ClaimLost()          {}
func (nopObserver) ClaimExpired()       {}
func (nopObserver) FleetReachable(bool) {}

// Options are what Join needs.
type Options struct {
	URLs      []string
	CredsFile string // NATS credentials (JWT and NKey seed); empty: none
	TokenFile string // file holding a NATS token; empty: none
	HostID    string
	ClaimTTL  time.Duration
	// Replicas is how many servers of the NATS cluster keep the buckets
	// (set when they are made); 0: 1.
	Replicas int
	Log      *slog.Logger
	Observer Observer // nil: none
	// ConnectTimeout bounds the first connection; 0: 5 s.
	ConnectTimeout time.Duration
}

// Fleet is this host's membership: its presence key and the claims it
// holds. Its methods are safe for concurrent use.
type Fleet struct {
	opt      Options
	log      *slog.Logger
	obs      Observer
	nc       *nats.Conn
	claims   jetstream.KeyValue
	hosts    jetstream.KeyValue
	instance string // this process's nonce in the presence key
	since    time.Time

	mu        sync.Mutex
	held      map[string]*claim    // by KV key
	others    map[string]time.Time // keys another host held, until when not to ask again
	hostRev   uint64               // revision of the presence key; 0: not in the fleet
	hostOK    time.Time            // when the presence key was last written (send time)
	reachable bool
	loads     map[string]Load // this host's, by pool (Publish)
	peers     map[string]peer // the other hosts' loads, by host_id
	watched   time.Time       // when the watch of peers last read an update
	stopWatch context.CancelFunc

	dirty chan struct{} // loads changed: rewrite the presence key soon

	release  chan released // claims to delete, by the loop
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// claim is one job this host holds.
type claim struct {
	job   string
	rev   uint64
	since time.Time
	ok    time.Time // send time of the last write the server confirmed
}

// entry is a claim key's value.
type entry struct {
	Host     string    `json:"host"`
	Instance string    `json:"instance"`
	Job      string    `json:"job"`
	Since    time.Time `json:"since"`
}

// presence is a host key's value.
type presence struct {
	Instance string    `json:"instance"`
	Since    time.Time `json:"since"`
	Claims   int       `json:"claims"`
	// Pools: this host's load of each pool (Publish), for placement.
	Pools map[string]Load `json:"pools,omitempty"`
}

// Join connects to NATS, makes (or checks) the fleet's buckets and takes
// this host's presence key. A host_id held by a live host is refused
// once its key has had one claim TTL to lapse (a restarted host's own
// previous key lapses in that time).
func Join(ctx context.Context, o Options) (*Fleet, error) {
	if o.ClaimTTL <= 0 {
		return nil, errors.New("fleet: claim TTL must be positive")
	}
	if o.HostID == "" {
		return nil, errors.New("fleet: host_id is empty")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	f := &Fleet{
		opt: o, log: o.Log.With("fleet_host", o.HostID), obs: o.Observer, instance: nonce(), since: time.Now(),
		held: map[string]*claim{}, others: map[string]time.Time{},
		loads: map[string]Load{}, peers: map[string]peer{}, dirty: make(chan struct{}, 1),
		release: make(chan released, 1024), stop: make(chan struct{}), done: make(chan struct{}),
	}
	nopts := []nats.Option{
		nats.Name("fireactions " + o.HostID), nats.Timeout(o.ConnectTimeout),
		nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { f.log.Warn("fleet: NATS connection lost", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) { f.log.Info("fleet: NATS reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
	auth, err := authOptions(o)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), append(nopts, auth...)...)
	if err != nil {
		return nil, fmt.Errorf("fleet: connect to NATS %s: %w", strings.Join(o.URLs, ","), err)
	}
	f.nc = nc
	if err := f.open(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	if err := f.watch(); err != nil {
		nc.Close()
		return nil, err
	}
	f.reachable = true
	f.obs.FleetReachable(true)
	go f.loop()
	return f, nil
}

func (f *Fleet) open(ctx context.Context) error {
	js, err := jetstream.New(f.nc)
	if err != nil {
		return fmt.Errorf("fleet: jetstream: %w", err)
	}
	if f.claims, err = bucket(ctx, js, ClaimsBucket, f.opt.ClaimTTL, f.opt.Replicas); err != nil {
		return err
	}
	if f.hosts, err = bucket(ctx, js, HostsBucket, f.opt.ClaimTTL, f.opt.Replicas); err != nil {
		return err
	}
	return f.registerUntil(ctx, time.Now().Add(f.opt.ClaimTTL+f.opt.ClaimTTL/2))
}

// registerUntil writes this host's presence key, trying again until
// deadline while that can succeed: a previous run of this host may still
// hold the key (it lapses within the TTL), and a bucket just made on a
// cluster has no stream leader for a moment (no response from the
// stream: hosts of a new fleet join while its servers elect one). A
// write not answered within joinTry is tried again until ctx ends (a
// write that was made is this instance's, and the next try updates it).
func (f *Fleet) registerUntil(ctx context.Context, deadline time.Time) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, joinTry)
		err := f.register(tctx)
		cancel()
		wait := 100 * time.Millisecond
		switch {
		case err == nil:
			return nil
		case unanswered(err) && ctx.Err() == nil:
			// tried again until ctx ends
		case errors.Is(err, ErrHostIDTaken):
			wait = f.opt.ClaimTTL / 4
			fallthrough
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			if time.Now().After(deadline) {
				return err
			}
		default:
			return err
		}
		f.log.Debug("fleet: presence not written yet; trying again", "host_id", f.opt.HostID, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet: write presence of host_id %q: %w (last: %v)", f.opt.HostID, ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// unanswered: a JetStream request that got no answer in its time (lost
// on the way, or not served yet), which trying again may cure. (A server
// without JetStream answers "no responders" at once: no try cures that.)
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// joinTry bounds one try of a JetStream API step of Join: a reply
// lost on the way, or a request a cluster still settling never answers,
// costs one try, not Join's whole deadline.
const joinTry = 5 * time.Second

// bucket opens the KV bucket name, making it with MaxAge ttl and
// replicas copies if absent; one of another TTL or replica count is
// refused: every host of a fleet must agree. A try that gets no answer
// within joinTry is made again until ctx ends (making a bucket twice is
// safe: the second finds it).
func bucket(ctx context.Context, js jetstream.JetStream, name string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, joinTry)
		kv, err := openBucket(tctx, js, name, ttl, replicas)
		cancel()
		if err == nil || !unanswered(err) || ctx.Err() != nil {
			return kv, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func openBucket(ctx context.Context, js jetstream.JetStream, name string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, TTL: ttl, History: 1, Storage: jetstream.FileStorage, Replicas: replicas})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: open KV bucket %s: %w", name, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: read KV bucket %s: %w", name, err)
	}
	if st.TTL() != ttl {
		return nil, fmt.Errorf("fleet: fleet.claim_ttl %s differs from the fleet's (bucket %s keeps entries %s): every host must set the same", ttl, name, st.TTL())
	}
	if got := kvReplicas(st); got != replicas {
		return nil, fmt.Errorf("fleet: fleet.replicas %d differs from the fleet's (bucket %s has %d): every host must set the same", replicas, name, got)
	}
	return kv, nil
}

// kvReplicas is how many servers keep a bucket's stream.
func kvReplicas(st jetstream.KeyValueStatus) int {
	if b, ok := st.(*jetstream.KeyValueBucketStatus); ok && b.StreamInfo() != nil {
		return max(b.StreamInfo().Config.Replicas, 1)
	}
	return 1
}

// register writes this host's presence key: created if free, or
// rewritten if it is this process's own.
func (f *Fleet) register(ctx context.Context) error {
	sent := time.Now()
	v := f.presenceValue()
	rev, err := f.hosts.Create(ctx, f.opt.HostID, v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := f.hosts.Get(ctx, f.opt.HostID)
		if gerr != nil {
			return fmt.Errorf("fleet: read presence of host_id %q: %w", f.opt.HostID, gerr)
		}
		var p presence
		if json.Unmarshal(e.Value(), &p) == nil && p.Instance == f.instance {
			rev, err = f.hosts.Update(ctx, f.opt.HostID, v, e.Revision())
		} else {
			return fmt.Errorf("%w: %q (running since %s, last seen %s ago)", ErrHostIDTaken, f.opt.HostID,
				p.Since.Format(time.RFC3339), time.Since(e.Created()).Round(time.Millisecond))
		}
	}
	if err != nil {
		return fmt.Errorf("fleet: write presence of host_id %q: %w", f.opt.HostID, err)
	}
	f.mu.Lock()
	f.hostRev, f.hostOK = rev, sent
	f.mu.Unlock()
	return nil
}

// Close deletes this host's claims and presence (another host may take
// its jobs at once) and closes the connection.
func (f *Fleet) Close(ctx context.Context) {
	f.stopLoop()
	f.mu.Lock()
	if f.stopWatch != nil {
		f.stopWatch()
	}
	f.mu.Unlock()
	// Claims released but not yet deleted by the loop: delete them now,
	// or they would hold their jobs for up to a TTL after this host left.
	for pending := true; pending; {
		select {
		case r := <-f.release:
			_ = f.claims.Delete(ctx, r.key, jetstream.LastRevision(r.rev))
		default:
			pending = false
		}
	}
	f.mu.Lock()
	held := f.held
	f.held = map[string]*claim{}
	rev := f.hostRev
	f.hostRev = 0
	f.mu.Unlock()
	for k, c := range held {
		_ = f.claims.Delete(ctx, k, jetstream.LastRevision(c.rev))
	}
	if rev != 0 {
		_ = f.hosts.Delete(ctx, f.opt.HostID, jetstream.LastRevision(rev))
	}
	_ = f.nc.FlushWithContext(ctx)
	f.nc.Close()
}

// stopLoop stops the loop and waits for it to end; safe to call again.
func (f *Fleet) stopLoop() {
	f.stopOnce.Do(func() { close(f.stop) })
	<-f.done
}
