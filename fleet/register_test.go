package fleet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// leaderlessHosts is a hosts bucket whose stream answers nobody for its
// first n writes, as a bucket just made on a cluster does until its
// servers elect the stream's leader; then it takes the write.
type leaderlessHosts struct {
	jetstream.KeyValue // nil: any other call panics
	n, creates         atomic.Int32
}

func (h *leaderlessHosts) Create(context.Context, string, []byte, ...jetstream.KVCreateOpt) (uint64, error) {
	if h.creates.Add(1) <= h.n.Load() {
		return 0, jetstream.ErrNoStreamResponse
	}
	return 1, nil
}

// A host joining a fleet whose hosts bucket has no stream leader yet
// (a new cluster, all hosts started at once) writes its presence once the
// leader is there, within its deadline; it does not fail the join. After
// the deadline the stream's error is the join's.
func TestPresenceWaitsForANewBucketsStreamLeader(t *testing.T) {
	newFleet := func(noAnswer int32) (*Fleet, *leaderlessHosts) {
		h := &leaderlessHosts{}
		h.n.Store(noAnswer)
		return &Fleet{opt: Options{HostID: "a", ClaimTTL: 3 * time.Second}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			hosts: h, instance: "i", since: time.Now()}, h
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	f, h := newFleet(3)
	if err := f.registerUntil(ctx, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("presence after 3 unanswered writes: %v", err)
	}
	if got := h.creates.Load(); got != 4 {
		t.Errorf("%d writes, want 4 (3 unanswered, then the one taken)", got)
	}
	if f.hostRev != 1 {
		t.Errorf("presence revision %d, want 1", f.hostRev)
	}

	f, _ = newFleet(1 << 30)
	err := f.registerUntil(ctx, time.Now().Add(300*time.Millisecond))
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("a stream leaderless past the deadline: %v, want %v", err, jetstream.ErrNoStreamResponse)
	}
}
