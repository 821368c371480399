package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Reporter posts reports to the host. Right after link-up the guest's
// first SYN is sometimes dropped, which would cost a 1 s TCP retransmit:
// hence the short dial timeout and the retries.
type Reporter struct {
	URL   string
	Token string
	// Client sends the requests; its transport should dial with a short
	// timeout.
	Client *http.Client
	// Attempts is how many times a report is tried; AttemptTimeout bounds
	// each try, and Backoff is the pause after the first failure, doubled
	// after each following one up to MaxBackoff.
	Attempts       int
	AttemptTimeout time.Duration
	Backoff        time.Duration
	MaxBackoff     time.Duration
	// Patience: a report the host did not answer (it is restarting: the
	// orchestrator was killed and its unit starts it again after 5 s) is
	// tried past Attempts until Patience has passed since its first try,
	// so that what the VM did meanwhile (runner ready, job taken) reaches
	// the host that adopts it. 0: Attempts only.
	Patience time.Duration
}

// NewReporter returns a Reporter for the config's report endpoint. A URL
// without a path gets agentproto.ReportPath.
func NewReporter(r agentproto.Reporter) *Reporter {
	u := r.URL
	if p, err := url.Parse(u); err == nil && (p.Path == "" || p.Path == "/") {
		p.Path = agentproto.ReportPath
		u = p.String()
	}
	return &Reporter{
		URL:   u,
		Token: r.Token,
		Client: &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 300 * time.Millisecond}).DialContext,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
		}},
		Attempts:       5,
		AttemptTimeout: time.Second,
		Backoff:        100 * time.Millisecond,
		MaxBackoff:     2 * time.Second,
		Patience:       time.Minute,
	}
}

// Send posts one report, retrying on network errors and on 5xx, 408 and
// 429 answers (Attempts times, then on until Patience has passed). Other
// answers are final.
func (r *Reporter) Send(ctx context.Context, rep agentproto.Report) error {
	body, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encoding %s report: %w", rep.Event, err)
	}
	backoff := r.Backoff
	first := time.Now()
	var last error
	for i := 0; i < max(r.Attempts, 1) || time.Since(first)+backoff < r.Patience; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("sending %s report: %w (last attempt: %v)", rep.Event, ctx.Err(), last)
			case <-time.After(backoff):
			}
			backoff *= 2
			if r.MaxBackoff > 0 {
				backoff = min(backoff, r.MaxBackoff)
			}
		}
		var retry bool
		retry, last = r.post(ctx, body)
		if last == nil {
			return nil
		}
		if !retry {
			break
		}
	}
	return fmt.Errorf("sending %s report to %s: %w", rep.Event, r.URL, last)
}

// post makes one attempt and says whether a failure is worth retrying.
func (r *Reporter) post(ctx context.Context, body []byte) (retry bool, err error) {
	if r.AttemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.AttemptTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.Token)
	resp, err := r.Client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c >= 500, c == http.StatusRequestTimeout, c == http.StatusTooManyRequests:
		return true, fmt.Errorf("host answered %s", resp.Status)
	default:
		return false, fmt.Errorf("host answered %s", resp.Status)
	}
}
