package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Where dockerd's files are in the guest.
const (
	dockerConfigPath = "/etc/docker/daemon.json"
	dockerSocketPath = "/var/run/docker.sock"
	dockerLogPath    = "/var/log/dockerd.log"
	cgroupMount      = "/sys/fs/cgroup"
)

// DefaultDockerWait bounds the wait for dockerd's socket: under TCG its
// start takes seconds.
const DefaultDockerWait = 90 * time.Second

// runsDocker reports whether the guest will run dockerd: the pool asks
// for it and the image has it.
func (a *Agent) runsDocker(reg *agentproto.Registry) bool {
	return reg != nil && reg.Docker && a.findExecutable("dockerd", DefaultPath) != ""
}

// startDocker starts the guest's dockerd in its own session with env (the
// proxy), its output in /var/log/dockerd.log, and waits for its socket.
// The socket's group comes from daemon.json, which the agent wrote
// before. A guest without dockerd is an error naming the image: the pool
// asks for Docker, and a job that needs it would fail later and less
// clearly (the host checks an image root before boot already).
func (a *Agent) startDocker(ctx context.Context, env []string, wait time.Duration) error {
	bin := a.findExecutable("dockerd", envValue(env, "PATH"))
	if bin == "" {
		root := "the guest root (initramfs)"
		if a.image != "" {
			root = "image " + a.image
		}
		return fmt.Errorf("docker: the pool asks for Docker (cache.docker), but %s has no dockerd in PATH %s", root, envValue(env, "PATH"))
	}
	start := a.Sys.Uptime()
	if err := a.mountCgroups(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(a.path(dockerLogPath)), 0o755); err != nil {
		return fmt.Errorf("starting dockerd: %w", err)
	}
	log, err := os.OpenFile(a.path(dockerLogPath), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW, 0o640)
	if err != nil {
		return fmt.Errorf("starting dockerd: %w", err)
	}
	defer log.Close() // the child has its own copy
	cmd := &exec.Cmd{
		Path:        bin,
		Args:        []string{"dockerd", "--config-file=" + a.path(dockerConfigPath)},
		Env:         env,
		Dir:         a.path("/"),
		Stdout:      log,
		Stderr:      log,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := a.Sys.StartProcess(cmd); err != nil {
		return fmt.Errorf("starting dockerd: %w", err)
	}
	sock, err := a.dockerSocket()
	if err != nil {
		return err
	}
	if err := waitSocket(ctx, sock, wait); err != nil {
		a.logf("docker: dockerd (pid %d) did not open %s; the end of %s:\n%s", cmd.Process.Pid, sock, dockerLogPath, a.tail(dockerLogPath, 2048))
		return fmt.Errorf("dockerd: %w", err)
	}
	a.logf("docker: dockerd (pid %d) ready on %s in %.3fs", cmd.Process.Pid, strings.TrimPrefix(sock, strings.TrimSuffix(a.Root, "/")), (a.Sys.Uptime() - start).Seconds())
	return nil
}

// dockerSocket is the Unix socket dockerd will listen on: the first unix://
// entry of daemon.json's hosts, else the default.
func (a *Agent) dockerSocket() (string, error) {
	b, err := os.ReadFile(a.path(dockerConfigPath))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("dockerd: %w", err)
	}
	var cfg struct {
		Hosts []string `json:"hosts"`
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &cfg); err != nil {
			return "", fmt.Errorf("dockerd: %s: %w", dockerConfigPath, err)
		}
	}
	for _, h := range cfg.Hosts {
		if p, ok := strings.CutPrefix(h, "unix://"); ok && p != "" {
			return a.path(p), nil
		}
	}
	return a.path(dockerSocketPath), nil
}

// waitSocket waits until dockerd answers its API's ping on the Unix
// socket at p, for at most wait (0: DefaultDockerWait). A socket that
// accepts is not enough: dockerd listens before it has set up its
// storage, containerd and networks, and a daemon that fails there exits
// after clients connected.
func waitSocket(ctx context.Context, p string, wait time.Duration) error {
	if wait == 0 {
		wait = DefaultDockerWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p)
		},
		DisableKeepAlives: true,
	}}
	for {
		err := ping(ctx, client)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer to /_ping on %s after %s: %w", p, wait, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ping asks dockerd's API for /_ping, waiting at most 5s for the answer.
func ping(ctx context.Context, client *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping: %s", resp.Status)
	}
	return nil
}

// mountCgroups mounts the cgroup2 hierarchy dockerd needs, unless it is
// mounted already.
func (a *Agent) mountCgroups() error {
	if _, err := os.Stat(a.path(cgroupMount + "/cgroup.controllers")); err == nil {
		return nil
	}
	if err := os.MkdirAll(a.path(cgroupMount), 0o755); err != nil {
		return fmt.Errorf("mounting cgroup2: %w", err)
	}
	err := a.Sys.Mount("cgroup2", a.path(cgroupMount), "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mounting cgroup2 on %s: %w", cgroupMount, err)
	}
	return nil
}

// findExecutable looks name up in the guest's pathEnv and returns its
// path in the agent's view, or "".
func (a *Agent) findExecutable(name, pathEnv string) string {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := a.path(filepath.Join(dir, name))
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// tail is the last n bytes of a guest file, for the console.
func (a *Agent) tail(p string, n int64) string {
	f, err := os.Open(a.path(p))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, 0)
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	return string(b[:k])
}
