package github

import (
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	gh "github.com/google/go-github/v93/github"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// Pool is one pool's view of GitHub: its scope, its repositories, its
// runners, handed out by Client.Pool. It implements forge.Forge and
// forge.QueueNotifier; the forge's webhooks come to its Client.
type Pool struct {
	c      *Client
	scope  Scope
	kind   scopeKind     // what scope's kind means at GitHub
	inst   *installation // the App installation it acts as; nil with a token
	repos  []string
	labels []string
	group  string
	gh     *gh.Client
	log    *slog.Logger

	groupMu sync.Mutex
	groupID int64 // resolved runner group; 0: not yet

	round     sync.Mutex // held by the reconciler round in flight
	stateMu   sync.Mutex
	nextRound time.Time
	begun     bool  // the first round has started
	polled    bool  // a round has succeeded
	lastErr   error // the last round's failure
	cache     runnerCache

	notify func(forge.QueueChange) // guarded by c.mu; see NotifyQueue
	ss     *scaleSetDemand         // scale-set mode; nil: webhooks and polling
}

var (
	_ forge.Forge         = (*Pool)(nil)
	_ forge.QueueNotifier = (*Pool)(nil)
)

// Pool adds a pool of this forge.
func (c *Client) Pool(o PoolOptions) (*Pool, error) {
	s := o.Scope
	p := &Pool{c: c, scope: s, labels: o.Labels, group: strings.TrimSpace(o.Group), log: c.log.With("scope", s.String())}
	k, err := kindOf(s)
	if err != nil {
		return nil, err
	}
	p.kind = k
	numericGroup := false
	if id, err := strconv.ParseInt(p.group, 10, 64); err == nil && id > 0 {
		p.groupID, numericGroup = id, true
	}
	switch {
	case p.group != "" && k.groups == groupsNone:
		return nil, fmt.Errorf("github: scope %s: runner groups exist at org and enterprise scope only", s)
	case p.group != "" && k.groups == groupsByID && !numericGroup:
		return nil, fmt.Errorf("github: scope %s: give the runner group's numeric id, not %q", s, p.group)
	case !k.appTokens && c.token == "":
		return nil, fmt.Errorf("github: scope %s: %w", s, ErrEnterpriseNeedsPAT)
	}
	p.repos = o.Repos
	if own := k.ownRepo(s); own != "" {
		p.repos = []string{own}
	}
	if p.group == "" {
		p.groupID = defaultGroupID
	}
	switch o.Demand {
	case "", DemandWebhooks:
	case DemandScaleSet:
		if p.ss, err = newScaleSetDemand(p, o); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("github: scope %s: demand %q: want %s or %s", s, o.Demand, DemandScaleSet, DemandWebhooks)
	}
	if c.token != "" {
		p.gh, err = c.newGitHub(c.retry, c.token)
	} else {
		fixed := o.InstallationID
		if fixed == 0 {
			fixed = c.instID
		}
		p.inst = &installation{c: c, scope: s, fixed: fixed, log: p.log}
		p.gh, err = c.newGitHub(p.inst, "")
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pools = append(c.pools, p)
	c.all = append(c.all, p)
	for _, l := range o.Labels {
		if _, ok := c.labels[strings.ToLower(l)]; !ok {
			c.labels[strings.ToLower(l)] = l
			c.labelGen.Add(1)
		}
	}
	return p, nil
}

// Retain implements forge.Driver: of the pools added, only those in
// inUse keep a share of the forge's demand (deliveries of their
// repositories are kept, queue changes told to them) and spell its labels
// (a reload that respells a label takes effect); the others still answer
// calls.
func (c *Client) Retain(inUse []forge.Forge) {
	keep := map[*Pool]bool{}
	for _, f := range inUse {
		if p, ok := forge.Unwrap(f).(*Pool); ok && p.c == c {
			keep[p] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var pools []*Pool
	labels := map[string]string{}
	for _, p := range c.pools {
		if !keep[p] {
			continue
		}
		pools = append(pools, p)
		for _, l := range p.labels {
			if _, ok := labels[strings.ToLower(l)]; !ok {
				labels[strings.ToLower(l)] = l
			}
		}
	}
	c.pools = pools
	if !maps.Equal(labels, c.labels) {
		c.labels = labels
		c.labelGen.Add(1)
	}
}

// NotifyQueue implements forge.QueueNotifier: notify is told each job of
// the pool's scope that joins or leaves the queue (a delivery, a poll),
// as it happens; a delivery it was told of kicks nothing.
//
// In scale-set mode the changes are the scale set's: a non-nil notify
// starts its listener (a session), nil stops it and deletes the session.
func (p *Pool) NotifyQueue(notify func(forge.QueueChange)) {
	p.c.mu.Lock()
	p.notify = notify
	p.c.mu.Unlock()
	if p.ss == nil {
		return
	}
	if notify != nil {
		p.ss.start()
	} else {
		p.ss.stop()
	}
}

// defaultGroupID is the id of GitHub's "Default" runner group.
const defaultGroupID = 1

// Kind implements forge.Forge.
func (p *Pool) Kind() string { return "github" }

// RateLimitRemaining is the API budget left of the credential the pool
// acts with, its App installation's or the forge's token's (metrics read
// it); -1 before any answer.
func (p *Pool) RateLimitRemaining() int {
	if p.inst != nil {
		return p.inst.remaining()
	}
	return p.c.RateLimitRemaining()
}

// covers reports whether a job of repo (OWNER/NAME) belongs to this pool:
// its repository, its org's repositories, or (enterprise) the listed
// repositories and deliveries naming the enterprise.
func (p *Pool) covers(repo, enterprise string) bool {
	if p.kind.owns(p.scope, repo, enterprise) {
		return true
	}
	for _, r := range p.repos {
		if strings.EqualFold(r, repo) {
			return true
		}
	}
	return false
}
