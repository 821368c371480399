package github

import (
	"context"
	"testing"
)

// A scale-set pool's queue is its own and its capacity goes to its
// scale set; a pool on webhooks has neither.
func TestScaleSetPoolOwnsQueueAndTakesCapacity(t *testing.T) {
	ss := &scaleSetDemand{max: 2}
	p := &Pool{ss: ss}
	if !p.OwnQueue() {
		t.Fatal("a scale-set pool's queue is not its own")
	}
	if err := p.SetCapacity(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ss.mu.Lock()
	got := ss.max
	ss.mu.Unlock()
	if got != 0 {
		t.Fatalf("scale set max %d after SetCapacity(0), want 0", got)
	}
	hooks := &Pool{}
	if hooks.OwnQueue() {
		t.Fatal("a webhook pool's queue is said to be its own")
	}
	if err := hooks.SetCapacity(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
}
