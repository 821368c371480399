package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Status is the fleet as its buckets hold it now.
type Status struct {
	Hosts  []HostStatus  `json:"hosts"`
	Claims []ClaimStatus `json:"claims"`
}

// HostStatus is one host's presence.
type HostStatus struct {
	HostID   string        `json:"host_id"`
	Since    time.Time     `json:"since"`
	LastSeen time.Duration `json:"last_seen"` // ago
	Claims   int           `json:"claims"`
	// Pools: its free room and idle VMs per pool, as it last published.
	Pools map[string]Load `json:"pools,omitempty"`
}

// ClaimStatus is one claim.
type ClaimStatus struct {
	Host      string        `json:"host"`
	Job       string        `json:"job"`
	Age       time.Duration `json:"age"`       // since the claim was taken
	Refreshed time.Duration `json:"refreshed"` // ago
}

// maxStatusKeys bounds what a status reads.
const maxStatusKeys = 10000

// ReadStatus connects to NATS as o says, without joining, and reads the
// fleet's hosts and claims.
func ReadStatus(ctx context.Context, o Options) (Status, error) {
	var st Status
	nopts := []nats.Option{nats.Name("fireactions fleet status"), nats.Timeout(max(o.ConnectTimeout, time.Second))}
	auth, err := authOptions(o)
	if err != nil {
		return st, err
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), append(nopts, auth...)...)
	if err != nil {
		return st, fmt.Errorf("fleet: connect to NATS %s: %w", strings.Join(o.URLs, ","), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return st, fmt.Errorf("fleet: jetstream: %w", err)
	}
	now := time.Now()
	err = eachEntry(ctx, js, HostsBucket, func(e jetstream.KeyValueEntry) {
		st.Hosts = append(st.Hosts, hostStatus(e, now))
	})
	if err != nil {
		return st, err
	}
	err = eachEntry(ctx, js, ClaimsBucket, func(e jetstream.KeyValueEntry) {
		var c entry
		_ = json.Unmarshal(e.Value(), &c)
		st.Claims = append(st.Claims, ClaimStatus{Host: c.Host, Job: c.Job, Age: now.Sub(c.Since), Refreshed: now.Sub(e.Created())})
	})
	sortHosts(st.Hosts)
	sort.Slice(st.Claims, func(i, j int) bool { return st.Claims[i].Age > st.Claims[j].Age })
	return st, err
}

// Hosts is the fleet's hosts as this member reads them over its own
// connection (the status page asks it on each load): presence keys only,
// no claims.
func (f *Fleet) Hosts(ctx context.Context) ([]HostStatus, error) {
	var hosts []HostStatus
	now := time.Now()
	err := eachKey(ctx, f.hosts, HostsBucket, func(e jetstream.KeyValueEntry) {
		hosts = append(hosts, hostStatus(e, now))
	})
	sortHosts(hosts)
	return hosts, err
}

// hostStatus is a presence entry as a HostStatus.
func hostStatus(e jetstream.KeyValueEntry, now time.Time) HostStatus {
	var p presence
	_ = json.Unmarshal(e.Value(), &p)
	return HostStatus{HostID: e.Key(), Since: p.Since, LastSeen: now.Sub(e.Created()), Claims: p.Claims, Pools: p.Pools}
}

// LoadsText is loads as one line: "POOL free F idle I" per pool, by
// name, "-" when none.
func LoadsText(loads map[string]Load) string {
	if len(loads) == 0 {
		return "-"
	}
	names := slices.Sorted(maps.Keys(loads))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s free %d idle %d", n, loads[n].Free, loads[n].Idle)
	}
	return strings.Join(parts, ", ")
}

func sortHosts(h []HostStatus) {
	sort.Slice(h, func(i, j int) bool { return h[i].HostID < h[j].HostID })
}

// eachEntry calls fn for each live entry of bucket (none if it does not exist yet).
func eachEntry(ctx context.Context, js jetstream.JetStream, bucket string, fn func(jetstream.KeyValueEntry)) error {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fleet: open KV bucket %s: %w", bucket, err)
	}
	return eachKey(ctx, kv, bucket, fn)
}

// eachKey calls fn for each live entry of kv (bucket names it in errors),
// at most maxStatusKeys.
func eachKey(ctx context.Context, kv jetstream.KeyValue, bucket string, fn func(jetstream.KeyValueEntry)) error {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("fleet: list KV bucket %s: %w", bucket, err)
	}
	defer keys.Stop()
	n := 0
	for k := range keys.Keys() {
		if n++; n > maxStatusKeys {
			break
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted or lapsed meanwhile
		}
		fn(e)
	}
	return nil
}
