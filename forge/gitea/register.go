package gitea

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// readyLine is what the Gitea runner prints once it has declared itself to
// Gitea and starts asking for its job.
const readyLine = "declare successfully"

// busyLine is how the Gitea runner's log says it took a task.
const busyLine = `msg="task `

// hostLabels turns job labels into the runner's "name:host" labels: the job
// runs directly in the microVM, which is its isolation boundary.
func hostLabels(labels []string) []string {
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = l + ":host"
	}
	return out
}

// Register implements forge.Forge: it registers an ephemeral runner with
// the scope's registration token and returns the guest plan holding only
// that runner's own credential.
func (f *Forge) Register(ctx context.Context, spec forge.RunnerSpec) (*forge.Runner, error) {
	labels := hostLabels(spec.Labels)
	client := runnerv1connect.NewRunnerServiceClient(f.http, f.base+"/api/actions")
	var reg *runnerv1.Runner
	for attempt := 0; attempt < 2; attempt++ {
		tok, err := f.registrationToken(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		resp, err := client.Register(ctx, connect.NewRequest(&runnerv1.RegisterRequest{
			Name:      spec.Name,
			Token:     tok,
			Version:   f.version,
			Labels:    labels,
			Ephemeral: true,
		}))
		if err == nil {
			reg = resp.Msg.GetRunner()
			break
		}
		if !tokenRefused(err) {
			// A timeout or a broken connection: Gitea may have made the
			// runner all the same.
			f.lost(ctx, spec.Name)
			return nil, fmt.Errorf("gitea: register runner %s: %w", spec.Name, err)
		}
		// A reset registration token is refused: fetch a fresh one once.
		if attempt > 0 {
			return nil, fmt.Errorf("gitea: register runner %s: %w", spec.Name, err)
		}
	}
	if reg == nil || reg.GetUuid() == "" || reg.GetToken() == "" || reg.GetId() == 0 {
		f.lost(ctx, spec.Name)
		return nil, fmt.Errorf("gitea: register runner %s: answer has no id, uuid or token", spec.Name)
	}
	ref := forge.RunnerRef{ID: strconv.FormatInt(reg.GetId(), 10), Name: reg.GetName()}
	fj, err := f.forgejo(ctx)
	if err != nil {
		f.discard(ctx, ref)
		return nil, err
	}
	if !fj && !reg.GetEphemeral() {
		// A Gitea that knows no ephemeral runners drops the
		// flag: its runner would stay registered after its job and take
		// the next one in a VM that is no longer clean. (Forgejo has no
		// ephemeral runners: one-job makes its runner take one job, and
		// the orchestrator deletes it after.)
		f.discard(ctx, ref)
		return nil, fmt.Errorf("gitea: register runner %s: Gitea did not make the runner ephemeral (an older Gitea without ephemeral runners?); removed it", spec.Name)
	}
	guest, err := f.guestPlan(spec, reg, labels, fj)
	if err != nil {
		// Do not leave a registered runner behind for a VM that never runs.
		f.discard(ctx, ref)
		return nil, err
	}
	// The runner's credential goes into its memo, which the pool keeps
	// with the VM's record: FailJob speaks for the runner with it, in this
	// run or the next.
	ref.Memo, err = encodeMemo(runnerCred{uuid: reg.GetUuid(), token: reg.GetToken()})
	if err != nil {
		f.discard(ctx, ref)
		return nil, err
	}
	return &forge.Runner{RunnerRef: ref, Guest: guest}, nil
}

// discard removes a runner just registered that no VM will hold; if
// that fails, the next listings remove it (sweep.go).
func (f *Forge) discard(ctx context.Context, ref forge.RunnerRef) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sweepTimeout)
	defer cancel()
	if err := f.Remove(rctx, ref); err != nil {
		f.suspect(ref.Name)
	}
}

// tokenRefused reports whether Register refused the registration token:
// "runner registration token not found" or "… has been invalidated …"
// (routers/api/actions/runner.Register), which Gitea 1.26 sends as a
// plain error (connect's "unknown" code) and Forgejo as invalid_argument,
// the code it also gives a request without a token or a name: the text
// is what tells them apart.
func tokenRefused(err error) bool {
	return strings.Contains(err.Error(), "registration token")
}

// registration is the Gitea runner's .runner file.
type registration struct {
	ID        int64    `json:"id"`
	UUID      string   `json:"uuid"`
	Name      string   `json:"name"`
	Token     string   `json:"token"`
	Address   string   `json:"address"`
	Labels    []string `json:"labels"`
	Ephemeral bool     `json:"ephemeral"`
}

// guestPlan is how the guest runs the runner for one job: act_runner's
// daemon with an ephemeral registration, or on Forgejo forgejo-runner's
// one-job mode (Forgejo keeps no ephemeral flag; one-job takes one task
// and exits).
func (f *Forge) guestPlan(spec forge.RunnerSpec, reg *runnerv1.Runner, labels []string, forgejo bool) (agentproto.Runner, error) {
	g := spec.Guest
	home := path.Join("/home", g.User)
	regFile, err := json.MarshalIndent(registration{
		ID: reg.GetId(), UUID: reg.GetUuid(), Name: reg.GetName(), Token: reg.GetToken(),
		// act_runner's key, as Gitea answered; forgejo-runner's file has
		// none (Forgejo keeps no ephemeral runners: one-job is what makes
		// it take one job).
		Address: f.guestURL, Labels: labels, Ephemeral: reg.GetEphemeral() && !forgejo,
	}, "", "  ")
	if err != nil {
		return agentproto.Runner{}, fmt.Errorf("gitea: encode runner file: %w", err)
	}
	mode, ready := "daemon", readyLine
	if forgejo {
		mode, ready = forgejoOneJob, forgejoReadyLine
	}
	return agentproto.Runner{
		Forge:      "gitea",
		User:       g.User,
		UID:        g.UID,
		GID:        g.GID,
		Home:       home,
		WorkDir:    home,
		Command:    []string{g.AgentPath, mode, "--config", path.Join(home, "config.yaml")},
		ReadyLine:  ready,
		BusyLine:   busyLine,
		JobPattern: jobPattern,
		Files: []agentproto.File{
			{Path: path.Join(home, ".runner"), Mode: 0o600, Content: regFile},
			{Path: path.Join(home, "config.yaml"), Mode: 0o600, Content: []byte(runnerConfig(home, g))},
		},
	}, nil
}

// runnerConfig is the Gitea runner's config file: one job at a time, in
// host mode, no cache server, labels from the .runner file.
func runnerConfig(home string, g forge.GuestOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log:\n  level: info\n")
	fmt.Fprintf(&b, "runner:\n  file: %s\n  capacity: 1\n", path.Join(home, ".runner"))
	fmt.Fprintf(&b, "  fetch_interval: %s\n  fetch_interval_max: %s\n", g.FetchInterval, 2*g.FetchInterval)
	fmt.Fprintf(&b, "  fetch_timeout: 5s\n  shutdown_timeout: 0s\n  env_file: %s\n", path.Join(home, ".env"))
	fmt.Fprintf(&b, "cache:\n  enabled: false\n")
	fmt.Fprintf(&b, "host:\n  workdir_parent: %s\n", path.Join(home, "work"))
	return b.String()
}
