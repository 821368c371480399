package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

func TestReporterSendsJSONWithTheBearerToken(t *testing.T) {
	host := newHostServer(t, "tok")
	r := NewReporter(agentproto.Reporter{URL: host.URL, Token: "tok"})
	rep := agentproto.Report{VMID: "vm-1", Event: agentproto.EventRunnerExited, Uptime: 1500 * time.Millisecond, ExitCode: 2, Message: "m"}
	if err := r.Send(context.Background(), rep); err != nil {
		t.Fatal(err)
	}
	got := host.got()
	if len(got) != 1 || got[0] != rep {
		t.Fatalf("host got %+v", got)
	}
	raw := host.raw[0]
	want := map[string]any{"vm_id": "vm-1", "event": "runner-exited", "uptime_ns": float64(1.5e9), "exit_code": float64(2), "message": "m"}
	for k, v := range want {
		if raw[k] != v {
			t.Errorf("JSON %s = %v, want %v", k, raw[k], v)
		}
	}
	if len(raw) != len(want) {
		t.Errorf("JSON has extra keys: %v", raw)
	}
}

func TestReporterRetriesAfterAFailure(t *testing.T) {
	host := newHostServer(t, "tok")
	host.fail = 2
	r := NewReporter(agentproto.Reporter{URL: host.URL + agentproto.ReportPath, Token: "tok"})
	r.Backoff = time.Millisecond
	if err := r.Send(context.Background(), agentproto.Report{VMID: "v", Event: agentproto.EventBooted}); err != nil {
		t.Fatal(err)
	}
	if host.hits != 3 || len(host.got()) != 1 {
		t.Errorf("hits %d, reports %d", host.hits, len(host.got()))
	}
}

// A host that does not answer for longer than Attempts cover (the
// orchestrator restarting) still gets the report, within Patience; past
// it, the report is given up.
func TestReporterWaitsForARestartingHostWithinPatience(t *testing.T) {
	host := newHostServer(t, "tok")
	host.fail = 20
	r := NewReporter(agentproto.Reporter{URL: host.URL + agentproto.ReportPath, Token: "tok"})
	r.Attempts, r.Backoff, r.MaxBackoff, r.Patience = 2, time.Millisecond, 5*time.Millisecond, 10*time.Second
	if err := r.Send(context.Background(), agentproto.Report{VMID: "v", Event: agentproto.EventRunnerReady}); err != nil {
		t.Fatal(err)
	}
	if host.hits != 21 || len(host.got()) != 1 {
		t.Errorf("hits %d, reports %d; want the report delivered at the 21st attempt", host.hits, len(host.got()))
	}

	gone := newHostServer(t, "tok")
	gone.fail = 1 << 30
	r = NewReporter(agentproto.Reporter{URL: gone.URL + agentproto.ReportPath, Token: "tok"})
	r.Attempts, r.Backoff, r.MaxBackoff, r.Patience = 2, time.Millisecond, 5*time.Millisecond, 100*time.Millisecond
	if err := r.Send(context.Background(), agentproto.Report{VMID: "v", Event: agentproto.EventRunnerReady}); err == nil {
		t.Fatal("a report to a host that never answers was taken for delivered")
	}
	if gone.hits < 3 {
		t.Errorf("%d attempts within patience, want more than Attempts", gone.hits)
	}
}

func TestReporterDoesNotRetryARefusal(t *testing.T) {
	host := newHostServer(t, "tok")
	r := NewReporter(agentproto.Reporter{URL: host.URL, Token: "wrong"})
	r.Backoff = time.Millisecond
	err := r.Send(context.Background(), agentproto.Report{Event: agentproto.EventBooted})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("err %v", err)
	}
	if host.hits != 1 {
		t.Errorf("%d attempts at a refusal", host.hits)
	}
}

func TestReporterRetriesAnUnansweredConnection(t *testing.T) {
	// A listener that accepts connections but never answers, like a host
	// whose reply was lost: each attempt ends at AttemptTimeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	r := NewReporter(agentproto.Reporter{URL: "http://" + l.Addr().String(), Token: "t"})
	r.Attempts, r.AttemptTimeout, r.Backoff, r.Patience = 3, 50*time.Millisecond, time.Millisecond, 0
	start := time.Now()
	err = r.Send(context.Background(), agentproto.Report{Event: agentproto.EventBooted})
	if err == nil || len(accepted) != 3 {
		t.Errorf("err %v after %d attempts", err, len(accepted))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s", d)
	}
}

func TestNewReporterAddsTheReportPath(t *testing.T) {
	for in, want := range map[string]string{
		"http://10.0.0.1:8080":          "http://10.0.0.1:8080" + agentproto.ReportPath,
		"http://10.0.0.1:8080/":         "http://10.0.0.1:8080" + agentproto.ReportPath,
		"http://10.0.0.1:8080/x/report": "http://10.0.0.1:8080/x/report",
	} {
		if got := NewReporter(agentproto.Reporter{URL: in}).URL; got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}

func TestQueueNeverBlocksOnAnUnreachableHost(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close() // accepts nothing: connections hang in the backlog
	rep := NewReporter(agentproto.Reporter{URL: "http://" + l.Addr().String()})
	start := time.Now()
	q := newReportQueue(rep, "vm", func() time.Duration { return time.Since(start) }, t.Logf)
	q.start(context.Background())
	for i := 0; i < 200; i++ {
		q.add(agentproto.Report{Event: agentproto.EventRunnerReady})
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("add blocked for %s", d)
	}
	q.close(200 * time.Millisecond)
	if d := time.Since(start); d > time.Second {
		t.Errorf("close took %s", d)
	}
}
