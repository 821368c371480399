package githubdouble

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// RunnerFile is the .runner file of a JIT configuration.
type RunnerFile struct {
	AgentID    int64  `json:"agentId"`
	AgentName  string `json:"agentName"`
	PoolID     int64  `json:"poolId"`
	ServerURL  string `json:"serverUrl"`
	GitHubURL  string `json:"gitHubUrl"`
	WorkFolder string `json:"workFolder"`
	Ephemeral  bool   `json:"ephemeral"`
}

// Credentials is the .credentials file of a JIT configuration.
type Credentials struct {
	Scheme string            `json:"scheme"`
	Data   map[string]string `json:"data"`
}

// DecodeJIT reads a JIT configuration the double issued.
func DecodeJIT(jit string) (RunnerFile, Credentials, error) {
	var rf RunnerFile
	var cr Credentials
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(jit))
	if err != nil {
		return rf, cr, fmt.Errorf("jit config is not base64: %w", err)
	}
	var files map[string]string
	if err := json.Unmarshal(raw, &files); err != nil {
		return rf, cr, fmt.Errorf("jit config is not a JSON map: %w", err)
	}
	for name, v := range map[string]any{".runner": &rf, ".credentials": &cr} {
		b, err := base64.StdEncoding.DecodeString(files[name])
		if err != nil {
			return rf, cr, fmt.Errorf("jit config %s: %w", name, err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			return rf, cr, fmt.Errorf("jit config %s: %w", name, err)
		}
	}
	if rf.ServerURL == "" || cr.Data["token"] == "" {
		return rf, cr, fmt.Errorf("jit config lacks the server URL or the runner's credential")
	}
	return rf, cr, nil
}

// ErrKilledByJob is RunStandIn's answer when its job broke it (a job
// queued with JobSpec.KillsRunner): the runner ends without a word to
// GitHub, which goes on seeing the job in progress.
var ErrKilledByJob = errors.New("the job killed its runner")

// StandIn is a stand-in runner's situation: its JIT configuration, and
// its process's arguments and environment, which it reports.
type StandIn struct {
	JIT    string
	Argv   []string
	Env    []string
	Out    io.Writer
	Client *http.Client
}

// RunStandIn is the stand-in runner: it connects with its JIT
// configuration, says it listens for jobs, takes one job, "runs" it by
// reporting to the double, says so and returns. Its output has the real
// runner's lines the orchestrator watches ("Listening for Jobs",
// "Running job:").
func RunStandIn(ctx context.Context, s StandIn) error {
	rf, cr, err := DecodeJIT(s.JIT)
	if err != nil {
		return err
	}
	if s.Client == nil {
		s.Client = &http.Client{Timeout: 30 * time.Second}
	}
	ts := func() string { return time.Now().UTC().Format("2006-01-02 15:04:05Z") }
	fmt.Fprintf(s.Out, "\n√ Connected to GitHub\n\nCurrent runner version: 'stand-in'\n%s: Listening for Jobs\n", ts())
	var job acquired
	for {
		status, body, err := s.post(ctx, rf.ServerURL+"/_runner/acquire", cr.Data["token"], acquireRequest{WaitMillis: 10000})
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(s.Out, "%s: acquire: %v; retrying\n", ts(), err)
			time.Sleep(time.Second)
			continue
		case status == http.StatusNoContent:
			continue
		case status != http.StatusOK:
			return fmt.Errorf("acquire: %d %s", status, bytes.TrimSpace(body))
		}
		if err := json.Unmarshal(body, &job); err != nil {
			return fmt.Errorf("acquire: %w", err)
		}
		break
	}
	fmt.Fprintf(s.Out, "%s: Running job: %s\n", ts(), job.Name)
	if job.KillsRunner {
		return fmt.Errorf("job %d (%s): %w", job.JobID, job.Name, ErrKilledByJob)
	}
	req := completeRequest{JobID: job.JobID, Conclusion: "success", JIT: s.JIT, Argv: s.Argv, Env: s.Env}
	for attempt := 0; ; attempt++ {
		status, body, err := s.post(ctx, rf.ServerURL+"/_runner/complete", cr.Data["token"], req)
		if err == nil && status == http.StatusOK {
			break
		}
		if err == nil || attempt == 5 {
			return fmt.Errorf("complete job %d: %d %s %v", job.JobID, status, bytes.TrimSpace(body), err)
		}
		time.Sleep(time.Second)
	}
	fmt.Fprintf(s.Out, "%s: Job %s completed with result: Succeeded\n", ts(), job.Name)
	return nil
}

func (s StandIn) post(ctx context.Context, url, secret string, v any) (int, []byte, error) {
	b, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "RunnerToken "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}
