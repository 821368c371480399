package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxJob bounds the job name kept in a claim's value.
const maxJob = 256

// Key is the KV key of job (a forge scope and the job's id, as the pool
// manager names it): a fixed-length hash, so any forge's ids fit the KV
// key alphabet and no input makes it longer.
func Key(job string) string {
	h := sha256.Sum256([]byte(job))
	return "j." + hex.EncodeToString(h[:16])
}

// valid is how long after a confirmed write this host counts a claim as
// its own: less than the TTL, so it stops counting a claim it can no
// longer refresh before the server lets another host take it.
func (f *Fleet) valid() time.Duration { return f.opt.ClaimTTL * 2 / 3 }

// Claim takes job for this host unless another host holds it, and
// reports whether this host holds it now. A host cut off from NATS, or
// out of the fleet, claims nothing (ErrUnreachable).
func (f *Fleet) Claim(ctx context.Context, job string) (bool, error) {
	k := Key(job)
	now := time.Now()
	f.mu.Lock()
	if c := f.held[k]; c != nil && now.Sub(c.ok) < f.valid() {
		f.mu.Unlock()
		return true, nil
	}
	if until, ok := f.others[k]; ok && now.Before(until) {
		f.mu.Unlock()
		return false, nil
	}
	inFleet := f.hostRev != 0 && now.Sub(f.hostOK) < f.valid()
	_, stale := f.held[k]
	f.mu.Unlock()
	if !inFleet || f.nc.Status() != nats.CONNECTED {
		return false, ErrUnreachable
	}
	if stale {
		// This host's own claim, not confirmed lately: the loop's next
		// refresh confirms it or drops it. Creating its key would only
		// find it taken (by this host) and count a loss.
		return false, nil
	}
	if len(job) > maxJob {
		job = job[:maxJob]
	}
	v, _ := json.Marshal(entry{Host: f.opt.HostID, Instance: f.instance, Job: job, Since: now})
	rev, err := f.claims.Create(ctx, k, v)
	if err != nil {
		// The create may have been applied and only its answer lost (a
		// timeout), now or by an earlier Claim whose read back was lost
		// too (the key exists): the key says whose the job is.
		exists := errors.Is(err, jetstream.ErrKeyExists)
		rrev, theirs, rerr := f.reread(ctx, k, err)
		switch {
		case rerr == nil && exists:
			// This host's own key, made at a time not known: write it
			// again to know from when it counts.
			if rev, err = f.rewriteClaim(k, v, rrev); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				err = jetstream.ErrKeyExists // lapsed and taken meanwhile
			}
		case rerr == nil:
			rev, err = rrev, nil
		case theirs || exists:
			err = jetstream.ErrKeyExists
		default:
			err = rerr
		}
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		f.mu.Lock()
		f.others[k] = now.Add(f.othersFor())
		f.mu.Unlock()
		f.obs.ClaimLost()
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("fleet: claim job %s: %w", job, err)
	}
	f.mu.Lock()
	f.held[k] = &claim{job: job, rev: rev, since: now, ok: now}
	f.mu.Unlock()
	f.obs.ClaimWon()
	return true, nil
}

// othersFor is how long a claim found another host's is not asked for
// again: it spares NATS a create per foreign claim per look, and delays
// taking a job another host released by as much.
func (f *Fleet) othersFor() time.Duration { return min(f.opt.ClaimTTL/3, time.Second) }

// Forget stops refreshing this host's claim on job, which left the queue,
// and leaves its key to lapse within the TTL: a host whose read of the
// queue is older than the job's start does not claim it again meanwhile.
// No I/O.
func (f *Fleet) Forget(job string) {
	f.mu.Lock()
	delete(f.held, Key(job))
	f.mu.Unlock()
}

// Held reports whether this host still counts its claim on job: taken
// and confirmed within the last 2/3 of the TTL. No I/O.
func (f *Fleet) Held(job string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.held[Key(job)]
	return c != nil && time.Since(c.ok) < f.valid()
}

// Release gives this host's claim on a job still queued up (the host
// drains), so another host may take it now. It does not block: the key
// is deleted by the fleet's loop, or, if that is behind, lapses within
// the TTL.
func (f *Fleet) Release(job string) {
	k := Key(job)
	f.mu.Lock()
	c, ok := f.held[k]
	delete(f.held, k)
	f.mu.Unlock()
	if !ok {
		return
	}
	select {
	case f.release <- released{k, c.rev}:
	default:
	}
}

// Reachable reports whether this host is in the fleet now: connected,
// its presence confirmed within the last 2/3 of the TTL.
func (f *Fleet) Reachable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reachable
}

// loop refreshes the presence key and the claims every TTL/3, publishes
// loads told between refreshes and deletes released claims.
func (f *Fleet) loop() {
	defer close(f.done)
	t := time.NewTicker(f.opt.ClaimTTL / 3)
	defer t.Stop()
	var publishAt <-chan time.Time
	for {
		select {
		case <-f.stop:
			return
		case r := <-f.release:
			f.deleteReleased(r)
		case <-f.dirty:
			if publishAt == nil {
				publishAt = time.After(publishDelay)
			}
		case <-publishAt:
			publishAt = nil
			f.publish()
		case <-t.C:
			f.refresh()
		}
	}
}

// released is a claim to delete: its key and the revision this host
// last wrote.
type released struct {
	key string
	rev uint64
}

// deleteReleased deletes a released claim if it is still this host's
// write (a CAS on its revision): a claim that lapsed and another host
// took is left alone.
func (f *Fleet) deleteReleased(r released) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opt.ClaimTTL/3)
	defer cancel()
	if err := f.claims.Delete(ctx, r.key, jetstream.LastRevision(r.rev)); err != nil {
		f.log.Debug("fleet: delete released claim (it lapses instead)", "key", r.key, "err", err)
	}
}

// refresh rewrites this host's presence (rejoining if it had dropped out)
// and every claim it holds, each a CAS on the revision it holds: a claim
// rewritten by another host since it lapsed is lost. Claims not
// confirmed within their validity are dropped as expired.
func (f *Fleet) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), f.opt.ClaimTTL/3)
	defer cancel()
	now := time.Now()
	f.mu.Lock()
	rev := f.hostRev
	f.mu.Unlock()
	var err error
	if rev == 0 {
		err = f.register(ctx)
	} else {
		err = f.rewritePresence(ctx, rev)
	}
	f.mu.Lock()
	stale := now.Sub(f.watched) >= f.opt.ClaimTTL
	f.mu.Unlock()
	if stale && err == nil {
		// Not even this host's own refreshes arrived: the watch died.
		if werr := f.watch(); werr != nil {
			f.log.Warn("fleet: cannot follow the other hosts' loads", "err", werr)
		}
	}
	f.mu.Lock()
	type todo struct {
		k   string
		c   claim
		val []byte
	}
	var work []todo
	for k, c := range f.held {
		v, _ := json.Marshal(entry{Host: f.opt.HostID, Instance: f.instance, Job: c.job, Since: c.since})
		work = append(work, todo{k, *c, v})
	}
	for k, until := range f.others {
		if now.After(until) {
			delete(f.others, k)
		}
	}
	for h, p := range f.peers {
		if now.Sub(p.seen) >= f.opt.ClaimTTL {
			delete(f.peers, h) // dead: Elsewhere ignores it anyway
		}
	}
	f.mu.Unlock()
	for _, w := range work {
		nrev, uerr := f.claims.Update(ctx, w.k, w.val, w.c.rev)
		confirmed := uerr == nil
		if uerr != nil {
			// An answer lost (a timeout) may hide an update the server
			// applied, after which the revision held is stale: the key
			// says whether the claim is still this host's.
			var theirs, gone bool
			switch rrev, th, rerr := f.reread(ctx, w.k, uerr); {
			case rerr == nil && rrev != w.c.rev:
				// Still this host's, at a revision an earlier write whose
				// answer was lost made, at a time not known: write it
				// again to know from when it counts.
				nrev, uerr = rrev, nil
				if rev, err := f.rewriteClaim(w.k, w.val, rrev); err == nil {
					nrev, confirmed = rev, true
				}
			case rerr == nil:
				// Still this host's, the update not applied: unconfirmed
				// as before.
				nrev, uerr = rrev, nil
			case th:
				theirs = true
			default:
				// The read back's answer says the key is gone (deleted,
				// or lapsed): the claim is lost now, not once unconfirmed
				// for 2/3 of the TTL.
				gone = errors.Is(rerr, jetstream.ErrKeyNotFound)
			}
			if theirs || gone || errors.Is(uerr, jetstream.ErrKeyNotFound) {
				uerr = jetstream.ErrKeyRevisionMismatch
			}
		}
		f.mu.Lock()
		c := f.held[w.k]
		switch {
		case c == nil || c.rev != w.c.rev:
			// Released meanwhile.
		case uerr == nil:
			c.rev = nrev
			if confirmed {
				c.ok = now
			}
		case errors.Is(uerr, jetstream.ErrKeyRevisionMismatch):
			delete(f.held, w.k)
			f.obs.ClaimLost()
			f.log.Warn("fleet: claim lost: it lapsed and may be another host's", "job", c.job)
		case now.Sub(c.ok) >= f.valid():
			delete(f.held, w.k)
			f.obs.ClaimExpired()
			f.log.Warn("fleet: claim expired: NATS unreachable", "job", c.job, "err", uerr)
		}
		f.mu.Unlock()
	}
	f.mu.Lock()
	for k, c := range f.held {
		if now.Sub(c.ok) >= f.valid() {
			delete(f.held, k)
			f.obs.ClaimExpired()
		}
	}
	was := f.reachable
	f.reachable = f.hostRev != 0 && now.Sub(f.hostOK) < f.valid() && f.nc.Status() == nats.CONNECTED
	is := f.reachable
	f.mu.Unlock()
	if was != is {
		f.obs.FleetReachable(is)
		if is {
			f.log.Info("fleet: in the fleet: claiming jobs")
		} else {
			f.log.Warn("fleet: cut off from the fleet: claiming nothing new; running jobs go on", "err", err)
		}
	}
}

// rewriteClaim writes this host's claim k again on revision rev, with
// its own deadline (a sixth of the TTL), and returns the new revision.
// Its confirmation counts from the refresh's start, before this write.
func (f *Fleet) rewriteClaim(k string, v []byte, rev uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opt.ClaimTTL/6)
	defer cancel()
	return f.claims.Update(ctx, k, v, rev)
}

// reread reads claim key k after a write to it failed with werr, which
// may only mean that its answer was lost: it returns the key's revision
// if the key holds this process's claim (this host's, of this run or of
// no run named), theirs if it holds another
// host's (or another run's; the error is then werr), or the read's
// error with werr's text (jetstream.ErrKeyNotFound: no claim; any other:
// the claim's state is unknown).
// The read has its own deadline (a sixth of the TTL): the write's may
// be spent.
func (f *Fleet) reread(ctx context.Context, k string, werr error) (rev uint64, theirs bool, err error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opt.ClaimTTL/6)
	defer cancel()
	e, gerr := f.claims.Get(rctx, k)
	if gerr != nil {
		return 0, false, fmt.Errorf("%v (read back: %w)", werr, gerr)
	}
	var v entry
	if json.Unmarshal(e.Value(), &v) == nil && v.Host == f.opt.HostID && (v.Instance == f.instance || v.Instance == "") {
		return e.Revision(), false, nil
	}
	return 0, true, werr
}

// rewritePresence rewrites this host's presence key (claims held, loads)
// as a CAS on rev, its revision; one lapsed or taken meanwhile is
// registered again by the next refresh.
func (f *Fleet) rewritePresence(ctx context.Context, rev uint64) error {
	sent := time.Now()
	nrev, err := f.hosts.Update(ctx, f.opt.HostID, f.presenceValue(), rev)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.hostRev != rev:
		// Rewritten or dropped meanwhile.
	case err == nil:
		f.hostRev, f.hostOK = nrev, sent
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
		f.hostRev = 0 // lapsed (maybe taken): register again
	}
	return err
}

// publish rewrites the presence key with the loads told since, between
// refreshes.
func (f *Fleet) publish() {
	f.mu.Lock()
	rev := f.hostRev
	f.mu.Unlock()
	if rev == 0 {
		return // out of the fleet: the next refresh registers again
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.opt.ClaimTTL/3)
	defer cancel()
	if err := f.rewritePresence(ctx, rev); err != nil {
		f.log.Debug("fleet: publish loads (the next refresh does)", "err", err)
	}
}

// nonce tells this process from another one with the same host_id.
func nonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
