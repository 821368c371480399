package firecrackerdouble

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker/apispec"
	"github.com/nixos-fireactions/nixos-fireactions/vmm/qemu"
)

// firecrackerArgs are the firecracker arguments the double accepts: the
// ones the driver and the jailer pass, and a few harmless ones. Others
// are refused, so a new argument in the driver shows up here first.
var firecrackerArgs = map[string]flagSpec{
	"api-sock":                  {value: true},
	"id":                        {value: true},
	"start-time-us":             {value: true},
	"start-time-cpu-us":         {value: true},
	"parent-cpu-time-us":        {value: true},
	"level":                     {value: true},
	"log-path":                  {value: true},
	"boot-timer":                {},
	"no-seccomp":                {},
	"version":                   {},
	"http-api-max-payload-size": {value: true},
}

var instanceID = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// Env is the double's view of its environment.
type Env struct {
	Getenv   func(string) string
	Stdout   io.Writer // the guest's serial console
	Stderr   io.Writer
	SpecFile string // compiled-in default for FCDOUBLE_SPEC
}

func (e Env) setting(name, def string) string {
	if v := e.Getenv(name); v != "" {
		return v
	}
	return def
}

// RunFirecracker is the firecracker double's main: it returns the exit
// status (0 after the guest reset, as Firecracker).
func RunFirecracker(ctx context.Context, args []string, env Env) int {
	if err := runFirecracker(ctx, args, env); err != nil {
		fmt.Fprintln(env.Stderr, "firecrackerdouble firecracker:", err)
		return 1
	}
	return 0
}

func runFirecracker(ctx context.Context, args []string, env Env) error {
	p, err := parseArgs(args, firecrackerArgs, false)
	if err != nil {
		return fmt.Errorf("arguments parsing error: %w", err)
	}
	spec, err := loadSpec(env)
	if err != nil {
		return err
	}
	if p.has("version") {
		fmt.Fprintf(env.Stdout, "Firecracker v%s\n(fireactions test double: the API is checked against the published description, guests boot with QEMU)\n", spec.Version)
		return nil
	}
	id := p.get("id", "anonymous-instance")
	if !instanceID.MatchString(id) {
		return fmt.Errorf("invalid instance ID %q", id)
	}
	root := env.Getenv("FCDOUBLE_ROOT")
	sock := p.get("api-sock", "/run/firecracker.socket")
	if root != "" {
		sock = filepath.Join(root, filepath.Clean("/"+sock))
	}
	if _, err := os.Lstat(sock); err == nil {
		return fmt.Errorf("failed to open the API socket at %s: it exists (another instance?)", sock)
	}
	record, err := openRecord(env)
	if err != nil {
		return err
	}
	if record != nil {
		defer record.Close()
	}

	guests := make(chan *Guest, 1)
	opt := Options{Spec: spec, ID: id, Root: root, Hang: env.Getenv("FCDOUBLE_HANG"), GuestVsock: guestVsock(env.Getenv("FCDOUBLE_VSOCK_GUEST"))}
	if record != nil {
		opt.Record = record
	}
	if env.Getenv("FCDOUBLE_BOOT") != "none" {
		q, err := newQEMU(ctx, env)
		if err != nil {
			return err
		}
		opt.Boot = func(cfg BootConfig) error {
			g, err := q.Boot(cfg)
			if err != nil {
				return err
			}
			guests <- g
			return nil
		}
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("failed to open the API socket: %w", err)
	}
	defer os.Remove(sock)
	srv := &http.Server{Handler: NewServer(opt), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	select {
	case <-ctx.Done():
		return ctx.Err()
	case g := <-guests:
		<-g.Exited()
		if g.Err() != nil {
			return fmt.Errorf("QEMU ended: %w", g.Err())
		}
		return nil // the guest reset: Firecracker exits 0
	}
}

func loadSpec(env Env) (*apispec.Spec, error) {
	path := env.setting("FCDOUBLE_SPEC", env.SpecFile)
	if path == "" {
		return nil, errors.New("no API description: set FCDOUBLE_SPEC or build with firecrackerdouble.Build")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the API description: %w", err)
	}
	return apispec.Load(data)
}

// openRecord opens the request record: a descriptor the jailer double
// kept open, or a file.
func openRecord(env Env) (*os.File, error) {
	if fd := env.Getenv("FCDOUBLE_RECORD_FD"); fd != "" {
		n, err := strconv.Atoi(fd)
		if err != nil {
			return nil, fmt.Errorf("FCDOUBLE_RECORD_FD %q: %w", fd, err)
		}
		return os.NewFile(uintptr(n), "record"), nil
	}
	path := env.Getenv("FCDOUBLE_RECORD")
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the request record: %w", err)
	}
	return f, nil
}

// ReadRecord reads a request record (FCDOUBLE_RECORD): one Record per
// line, in the order the requests came.
func ReadRecord(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the request record: %w", err)
	}
	defer f.Close()
	var out []Record
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var r Record
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("request record %s: line %d: %w", path, len(out)+1, err)
		}
		out = append(out, r)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("request record %s: %w", path, err)
	}
	return out, nil
}

func newQEMU(ctx context.Context, env Env) (*QEMU, error) {
	d := qemu.Driver{Binary: env.setting("FCDOUBLE_QEMU", "qemu-system-x86_64")}
	switch a := env.Getenv("FCDOUBLE_ACCEL"); a {
	case "kvm", "tcg":
		d.Accel = qemu.Accel(a)
	case "":
		d.Accel, _ = qemu.DetectAccel(ctx, d.Binary, "/dev/kvm")
	default:
		return nil, fmt.Errorf("FCDOUBLE_ACCEL %q: want kvm or tcg", a)
	}
	return &QEMU{Driver: d, Stdout: env.Stdout, Stderr: env.Stderr}, nil
}
