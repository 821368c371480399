package firecracker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// SendIdentity's two bounds: the connecting by the Driver's
// IdentityConnectWait, the agent's answer (once it has applied the
// identity) by the caller's context. The waits below are far apart so
// that a slow machine does not blur them: the connect wait is long
// enough for a local connection under load, the agent's answer comes
// well after it.
const (
	testConnectWait = 500 * time.Millisecond
	answerAfterWait = 4 * testConnectWait
)

// restored is a resumed restore, named id, of a template saved by a
// driver whose connect wait is wait.
func restored(t *testing.T, id string, wait time.Duration) (*warmRig, vmm.Warm) {
	t.Helper()
	r := newWarmRigJailed(t, false)
	r.d.IdentityConnectWait = wait
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tap := testTAP(t)
	state := r.saveTemplate(ctx, t, r.spec(t, id+"-tpl", 0, tap))
	rs := r.spec(t, id, 1, tap)
	rs.Restore, rs.Initramfs = state, ""
	m, err := r.d.Start(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kill(t, m) })
	w := m.(vmm.Warm)
	if err := w.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// TestTheAgentsAnswerIsBoundedByTheCallerNotTheConnectWait: the agent
// answers once it has applied the identity, which may take longer than
// the connect wait: an agent that takes the connection at once and
// answers after the wait has ended gets its identity, once, and
// SendIdentity succeeds within the caller's context.
func TestTheAgentsAnswerIsBoundedByTheCallerNotTheConnectWait(t *testing.T) {
	r, w := restored(t, "late-ack", testConnectWait)
	expectAcknowledgedOnce(t, r, w, answerAfterWait, "an identity acknowledged after the connect wait")
}

// expectAcknowledgedOnce plays an agent that acknowledges its identity
// after the given time: SendIdentity (what says which case) must
// succeed within a minute, the identity sent once.
func expectAcknowledgedOnce(t *testing.T, r *warmRig, w vmm.Warm, after time.Duration, what string) {
	t.Helper()
	got, stop := r.listenAgent(t, agent{answer: agentproto.IdentityAck, after: after})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.SendIdentity(ctx, []byte(`{"vm":"acked"}`)); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	stop()
	if n := len(got); n != 1 {
		t.Fatalf("%s: sent %d times; want once", what, n)
	}
}

// TestAnAnswerLaterThanTheCallersDeadlineFailsWithIt: a caller whose
// context ends before the agent answers is not kept waiting for the
// answer: SendIdentity fails with the context's deadline, promptly, and
// does not send the identity again (the agent took it; the caller
// kills the VM).
func TestAnAnswerLaterThanTheCallersDeadlineFailsWithIt(t *testing.T) {
	r, w := restored(t, "no-ack", testConnectWait)
	got, stop := r.listenAgent(t, agent{answer: agentproto.IdentityAck, after: time.Hour})
	defer stop()
	expectDeadline(t, w, got, stop)
}

// expectDeadline sends an identity within a context that ends before
// the agent answers: it must fail with that context's deadline, long
// before the answer, having reached the agent once.
func expectDeadline(t *testing.T, w vmm.Warm, got chan string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(context.Background(), answerAfterWait, errCallersDeadline)
	defer cancel()
	start := time.Now()
	err := w.SendIdentity(ctx, []byte(`{"vm":"no-ack"}`))
	if !errors.Is(err, errCallersDeadline) {
		t.Fatalf("an identity the agent does not answer before the caller's deadline: %v; want the caller's deadline", err)
	}
	if took := time.Since(start); took > time.Minute {
		t.Errorf("SendIdentity took %v with a deadline of %v: it waited for the answer", took, answerAfterWait)
	}
	stop()
	if n := len(got); n != 1 {
		t.Fatalf("the identity reached the agent %d times; want once", n)
	}
}

// errCallersDeadline is the cause of the callers' deadlines below: an
// error that wraps it ended on the caller's context, not on the connect
// wait's (which is a deadline too).
var errCallersDeadline = errors.New("the caller's deadline")

// TestAnUnansweredIdentityAfterAResetFailsWithTheCallersDeadline: an
// agent whose first connection is reset before its answer takes the
// next, and does not answer that before the caller's deadline: the error
// is that attempt's (the caller's deadline), not the earlier reset's,
// though the connect wait had ended by then.
func TestAnUnansweredIdentityAfterAResetFailsWithTheCallersDeadline(t *testing.T) {
	r, w := restored(t, "reset-no-ack", testConnectWait)
	got, stop := r.listenAgent(t, agent{drop: 1, answer: agentproto.IdentityAck, after: time.Hour})
	defer stop()
	expectDeadline(t, w, got, stop)
}

// TestAnAgentThatTookItsLineAndLostItsAnswerIsSaidSo: the agent reads
// its line, the connection ends before its answer, and it listens no
// more (it takes one line). SendIdentity tries to connect until the
// connect wait ends and then says what went wrong: the answer lost,
// not only that the guest no longer listened.
func TestAnAgentThatTookItsLineAndLostItsAnswerIsSaidSo(t *testing.T) {
	r, w := restored(t, "lost", testConnectWait)
	_, stop := r.listenAgent(t, agent{drop: 1, once: true})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := w.SendIdentity(ctx, []byte(`{"vm":"lost"}`))
	if err == nil || !strings.Contains(err.Error(), "no acknowledgement from the guest") {
		t.Fatalf("an identity whose answer was lost: %v; want the lost answer said", err)
	}
	if errors.Is(err, vmm.ErrIdentityRefused) || ctx.Err() != nil {
		t.Fatalf("an identity whose answer was lost: %v; neither a refusal nor the caller's deadline", err)
	}
}

// TestAConnectWaitOfNoneOrLessIsTheDefault: a Driver whose
// IdentityConnectWait is not positive waits DefaultIdentityConnectWait,
// not no time at all.
func TestAConnectWaitOfNoneOrLessIsTheDefault(t *testing.T) {
	r, w := restored(t, "negwait", -time.Second)
	expectAcknowledgedOnce(t, r, w, 0, "an identity with IdentityConnectWait -1s")
}

// TestAnAnswerNeitherAckNorRefusalIsFinal: an agent that answers its
// identity with another line took it and said something else: the
// identity is not sent again, and the error quotes the answer and is no
// refusal.
func TestAnAnswerNeitherAckNorRefusalIsFinal(t *testing.T) {
	r, w := restored(t, "other-answer", testConnectWait)
	got, stop := r.listenAgent(t, agent{answer: "identity-maybe"})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := w.SendIdentity(ctx, []byte(`{"vm":"other"}`))
	stop()
	if err == nil || !strings.Contains(err.Error(), `it answered "identity-maybe"`) || errors.Is(err, vmm.ErrIdentityRefused) {
		t.Fatalf("SendIdentity = %v; want an error quoting the answer, not a refusal", err)
	}
	if n := len(got); n != 1 {
		t.Fatalf("sent %d times; want once", n)
	}
}

// TestABlankAnswerIsNoAnswer: an agent whose answer is a blank line has
// not answered (as a connection reset before its answer): the identity
// is sent again after each, until the connect wait ends, and the error
// is the lost answer, not the caller's deadline, which is further off.
func TestABlankAnswerIsNoAnswer(t *testing.T) {
	r, w := restored(t, "blank-answer", testConnectWait)
	got, stop := r.listenAgent(t, agent{answer: "  "})
	defer stop()
	ctx, cancel := context.WithTimeoutCause(context.Background(), answerAfterWait, errCallersDeadline)
	defer cancel()
	start := time.Now()
	err := w.SendIdentity(ctx, []byte(`{"vm":"blank"}`))
	took := time.Since(start)
	stop()
	if err == nil || errors.Is(err, errCallersDeadline) || !strings.Contains(err.Error(), "no acknowledgement from the guest") {
		t.Fatalf("SendIdentity = %v after %v; want no acknowledgement, before the caller's deadline", err, took)
	}
	if took < testConnectWait {
		t.Fatalf("SendIdentity gave up after %v; want it to try for the connect wait (%v)", took, testConnectWait)
	}
	// A blank answer ends its attempt and the next one goes (how many
	// fit in the connect wait depends on the machine's load).
	if n := len(got); n < 2 {
		t.Fatalf("sent %d times in %v; want again after each blank answer", n, took)
	}
}
