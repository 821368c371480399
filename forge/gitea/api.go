package gitea

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// errNotFound is a 404 from the API.
var errNotFound = errors.New("not found")

// do sends one REST call with the scope token and decodes a JSON answer
// into out (when out is not nil).
func (f *Forge) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+f.token)
	req.Header.Set("Accept", "application/json")
	resp, err := f.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s %s: %w", method, path, errNotFound)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, path, err)
	}
	return nil
}

// pageSize is the page length asked of list endpoints.
const pageSize = 50

// maxPages bounds list walks, so a misbehaving server cannot loop us.
const maxPages = 40

type apiJob struct {
	ID        int64     `json:"id"`
	Labels    []string  `json:"labels"`
	Status    string    `json:"status"`
	RunURL    string    `json:"run_url"`
	CreatedAt time.Time `json:"created_at"`
}

// QueuedJobs implements forge.Forge.
// The jobs webhook deliveries reported since are merged in (mergeHooked).
func (f *Forge) QueuedJobs(ctx context.Context) ([]forge.Job, error) {
	readAt := time.Now()
	if fj, err := f.forgejo(ctx); err != nil || fj {
		if err != nil {
			return nil, err
		}
		jobs, err := f.forgejoQueuedJobs(ctx)
		if err != nil {
			return nil, err
		}
		return f.mergeHooked(jobs, readAt), nil
	}
	var jobs []forge.Job
	for page := 1; page <= maxPages; page++ {
		var resp struct {
			Jobs  []apiJob `json:"jobs"`
			Total int64    `json:"total_count"`
		}
		path := fmt.Sprintf("%s/actions/jobs?status=queued&limit=%d&page=%d", f.prefix, pageSize, page)
		if err := f.do(ctx, http.MethodGet, path, &resp); err != nil {
			return nil, fmt.Errorf("gitea: list queued jobs: %w", err)
		}
		for _, j := range resp.Jobs {
			jobs = append(jobs, forge.Job{
				ID:       strconv.FormatInt(j.ID, 10),
				Labels:   j.Labels,
				Repo:     j.RunURL,
				QueuedAt: j.CreatedAt,
			})
		}
		if len(resp.Jobs) < pageSize || int64(len(jobs)) >= resp.Total {
			break
		}
	}
	return f.mergeHooked(jobs, readAt), nil
}

type apiRunner struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Busy   bool   `json:"busy"`
}

// Runners implements forge.Forge. A runner a failed registration may
// have left (sweep.go) is removed here, not reported.
func (f *Forge) Runners(ctx context.Context, owner forge.Owner) ([]forge.RunnerState, error) {
	if fj, err := f.forgejo(ctx); err != nil || fj {
		if err != nil {
			return nil, err
		}
		return f.forgejoRunnerList(ctx, owner)
	}
	seen := 0
	return f.walkRunners(ctx, owner, func(page int) ([]forge.RunnerState, bool, error) {
		var resp struct {
			Runners []apiRunner `json:"runners"`
			Total   int64       `json:"total_count"`
		}
		path := fmt.Sprintf("%s/actions/runners?limit=%d&page=%d", f.prefix, pageSize, page)
		if err := f.do(ctx, http.MethodGet, path, &resp); err != nil {
			return nil, false, fmt.Errorf("gitea: list runners: %w", err)
		}
		rs := make([]forge.RunnerState, 0, len(resp.Runners))
		for _, r := range resp.Runners {
			rs = append(rs, runnerState(r.ID, r.Name, r.Status, r.Busy))
		}
		seen += len(resp.Runners)
		return rs, len(resp.Runners) >= pageSize && int64(seen) < resp.Total, nil
	})
}

// walkRunners walks a runner listing page by page (at most maxPages):
// page decodes one page into runner states and says whether more may
// follow. It keeps the runners owner owns, removing suspects as it goes
// (reports).
func (f *Forge) walkRunners(ctx context.Context, owner forge.Owner, page func(int) ([]forge.RunnerState, bool, error)) ([]forge.RunnerState, error) {
	var out []forge.RunnerState
	for n := 1; n <= maxPages; n++ {
		rs, more, err := page(n)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if f.reports(ctx, owner, r.RunnerRef) {
				out = append(out, r)
			}
		}
		if !more {
			break
		}
	}
	return out, nil
}

// runnerState is a runner as a listing shows it: offline or not, busy or
// not.
func runnerState(id int64, name, status string, busy bool) forge.RunnerState {
	return forge.RunnerState{
		RunnerRef: forge.RunnerRef{ID: strconv.FormatInt(id, 10), Name: name},
		Online:    status != "offline",
		Busy:      busy,
	}
}

// Remove implements forge.Forge.
func (f *Forge) Remove(ctx context.Context, r forge.RunnerRef) error {
	if r.ID == "" {
		return fmt.Errorf("gitea: remove runner %q: no id", r.Name)
	}
	err := f.do(ctx, http.MethodDelete, f.prefix+"/actions/runners/"+r.ID, nil)
	if err != nil && !errors.Is(err, errNotFound) {
		return fmt.Errorf("gitea: remove runner %s (%s): %w", r.ID, r.Name, err)
	}
	return nil
}

// registrationToken returns the scope's registration token, fetched at most
// every few minutes, one fetch at a time, outside f.mu (see Forge.fetching).
// It is scope-wide and reusable: it stays on the host.
func (f *Forge) registrationToken(ctx context.Context, fresh bool) (string, error) {
	select {
	case f.fetching <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("gitea: get registration token: %w", ctx.Err())
	}
	defer func() { <-f.fetching }()
	if !fresh && f.regToken != "" && time.Since(f.regAt) < 5*time.Minute {
		return f.regToken, nil
	}
	var resp struct {
		Token string `json:"token"`
	}
	fj, err := f.forgejo(ctx)
	if err != nil {
		return "", fmt.Errorf("gitea: get registration token: %w", err)
	}
	if fj {
		// Forgejo hands the token out on a GET.
		err = f.forgejoGet(ctx, "/registration-token", &resp)
	} else {
		err = f.do(ctx, http.MethodPost, f.prefix+"/actions/runners/registration-token", &resp)
	}
	if err != nil {
		return "", fmt.Errorf("gitea: get registration token: %w", err)
	}
	if resp.Token == "" {
		return "", errors.New("gitea: get registration token: empty token")
	}
	f.regToken, f.regAt = resp.Token, time.Now()
	return resp.Token, nil
}
