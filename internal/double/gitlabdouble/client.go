package gitlabdouble

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// RunnerClient speaks GitLab's runner job protocol with one runner's
// authentication token, the calls gitlab-runner makes: verify, request a
// job, append to its log, report its state. The stand-in gitlab-runner of
// the end-to-end tests is built on it.
type RunnerClient struct {
	URL      string // the GitLab base URL, without /api/v4
	Token    string // the runner's own token (glrt-…)
	SystemID string
	HTTP     *http.Client
}

// ErrForbidden is GitLab's 403: a wrong or expired token, or a job that
// is no longer running.
var ErrForbidden = errors.New("403 forbidden")

// JobPayload is the part of a job a runner needs.
type JobPayload struct {
	ID      int64  `json:"id"`
	Token   string `json:"token"`
	JobInfo struct {
		Name        string `json:"name"`
		Stage       string `json:"stage"`
		ProjectID   int64  `json:"project_id"`
		ProjectName string `json:"project_name"`
	} `json:"job_info"`
	GitInfo struct {
		RepoURL  string   `json:"repo_url"`
		Ref      string   `json:"ref"`
		Sha      string   `json:"sha"`
		Refspecs []string `json:"refspecs"`
		Depth    int      `json:"depth"`
	} `json:"git_info"`
	RunnerInfo struct {
		Timeout int `json:"timeout"`
	} `json:"runner_info"`
	Variables []struct {
		Key    string `json:"key"`
		Value  string `json:"value"`
		Masked bool   `json:"masked"`
	} `json:"variables"`
	Steps []struct {
		Name   string   `json:"name"`
		Script []string `json:"script"`
	} `json:"steps"`
}

func (c *RunnerClient) client() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// call sends one JSON request and returns the response with its body read.
func (c *RunnerClient) call(ctx context.Context, method, path string, in any, hdr http.Header, body io.Reader) (*http.Response, []byte, error) {
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+"/api/v4"+path, body)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client().Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusForbidden {
		return resp, b, fmt.Errorf("%s %s: %w", method, path, ErrForbidden)
	}
	return resp, b, nil
}

// Verify is POST /runners/verify; it returns the runner's ID.
func (c *RunnerClient) Verify(ctx context.Context) (int64, error) {
	resp, b, err := c.call(ctx, http.MethodPost, "/runners/verify", map[string]string{"token": c.Token, "system_id": c.SystemID}, nil, nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("verify: %s", resp.Status)
	}
	var out struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("verify: %w", err)
	}
	return out.ID, nil
}

// RequestJob is POST /jobs/request: a job, or nil when there is none.
func (c *RunnerClient) RequestJob(ctx context.Context, info map[string]any) (*JobPayload, error) {
	resp, b, err := c.call(ctx, http.MethodPost, "/jobs/request", map[string]any{"token": c.Token, "system_id": c.SystemID, "info": info}, nil, nil)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil, nil
	case http.StatusCreated:
		var j JobPayload
		if err := json.Unmarshal(b, &j); err != nil {
			return nil, fmt.Errorf("request job: %w", err)
		}
		return &j, nil
	}
	return nil, fmt.Errorf("request job: %s", resp.Status)
}

// PatchTrace is PATCH /jobs/:id/trace: it appends part to the job's log at
// offset and returns the log's new length as GitLab reports it.
func (c *RunnerClient) PatchTrace(ctx context.Context, id int64, jobToken string, offset int, part []byte) (int, error) {
	hdr := http.Header{}
	hdr.Set("Job-Token", jobToken)
	hdr.Set("Content-Type", "text/plain")
	hdr.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+len(part)-1))
	resp, _, err := c.call(ctx, http.MethodPatch, fmt.Sprintf("/jobs/%d/trace", id), nil, hdr, bytes.NewReader(part))
	if err != nil {
		return 0, err
	}
	_, end, _ := strings.Cut(resp.Header.Get("Range"), "-")
	n, convErr := strconv.Atoi(end)
	switch {
	case resp.StatusCode == http.StatusAccepted && convErr == nil:
		return n, nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && convErr == nil:
		return n, fmt.Errorf("patch trace: range mismatch, log is %d bytes", n)
	}
	return 0, fmt.Errorf("patch trace: %s", resp.Status)
}

// UpdateJob is PUT /jobs/:id: state is "running", "success" or "failed";
// log is the whole log sent, for its size and checksum. It returns the
// HTTP status: 200 done, 202 GitLab still waits for log parts.
func (c *RunnerClient) UpdateJob(ctx context.Context, id int64, jobToken, state string, exitCode int, log []byte) (int, error) {
	in := map[string]any{"token": jobToken, "state": state}
	if state != "running" {
		sum := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(log))
		in["exit_code"] = exitCode
		in["checksum"] = sum
		in["output"] = map[string]any{"checksum": sum, "bytesize": len(log)}
		if state == "failed" {
			in["failure_reason"] = "script_failure"
		}
	}
	resp, _, err := c.call(ctx, http.MethodPut, fmt.Sprintf("/jobs/%d", id), in, nil, nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, fmt.Errorf("update job: %s", resp.Status)
	}
	return resp.StatusCode, nil
}
