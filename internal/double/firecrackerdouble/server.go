package firecrackerdouble

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker/apispec"
)

// Firecracker's answers, word for word where a client might match them.
const (
	faultAfterStart  = "The requested operation is not supported after starting the microVM."
	faultBeforeStart = "The requested operation is not supported before starting the microVM."
	faultBadID       = "API Resource IDs can only contain alphanumeric characters and underscores."
	faultIDMismatch  = "The id from the path does not match the id from the body!"
	faultNoKernel    = "Cannot start microvm without kernel configuration."
	bodyErrorPrefix  = "An error occurred when deserializing the json body of a request: "
)

// maxPayload is Firecracker's default limit on a request body.
const maxPayload = 51200

var resourceID = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// Firecracker refuses these after InstanceStart though the description's
// text does not say "Pre-boot only" for them (its runtime API controller
// does not take them), and these before InstanceStart.
var (
	refusedAfterStart = map[string]bool{
		"PUT /logger": true, "PUT /metrics": true, "PUT /serial": true, "PUT /hotplug/memory": true,
	}
	refusedBeforeStart = map[string]bool{
		"PATCH /vm": true, "PATCH /balloon": true, "PATCH /balloon/statistics": true,
		"GET /balloon/statistics": true, "PATCH /balloon/hinting/start": true,
		"PATCH /balloon/hinting/stop": true, "GET /balloon/hinting/status": true,
		"PATCH /hotplug/memory": true, "GET /hotplug/memory": true,
	}
)

// Options configure a Server.
type Options struct {
	Spec *apispec.Spec
	ID   string // the instance id (--id)
	// Root is the chroot the double stands in for: API paths resolve
	// under it. "" means host paths (firecracker run without the jailer).
	Root string
	// Boot starts the guest on InstanceStart; nil accepts InstanceStart
	// without booting.
	Boot func(BootConfig) error
	// Record, when set, gets one JSON line per request (see Record).
	Record io.Writer
	// OpenTAP attaches to a TAP and lets go, or says why it cannot; nil:
	// the real thing.
	OpenTAP func(name string) error
	// GuestVsock connects to the guest's vsock port, standing in for a
	// guest that listens there (see vsock.go); nil: no guest listens.
	GuestVsock func(port uint32) (net.Conn, error)
	// Hang is a fault for tests: the request ("PUT /actions") the double
	// never answers, as a hung VMM (it is recorded with status 0). "":
	// every request is answered.
	Hang string
}

// Record is one request and the double's answer.
type Record struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Body   string `json:"body,omitempty"`
	Status int    `json:"status"`
	Fault  string `json:"fault,omitempty"`
}

// Server is the API of one firecracker double.
type Server struct {
	opt     Options
	started chan struct{}

	mu        sync.Mutex
	isStarted bool
	vm        BootConfig
	hasKernel bool
	// configured: a resource other than the logger and metrics was set
	// (a snapshot load is refused then); paused: PATCH /vm said Paused.
	configured bool
	paused     bool
	mmds       MMDS
	vsockLn    net.Listener  // the vsock device's socket, once configured
	vsockConns atomic.Uint32 // host-initiated connections forwarded
	recMu      sync.Mutex
}

// NewServer returns the API handler of a firecracker double.
func NewServer(opt Options) *Server {
	if opt.OpenTAP == nil {
		opt.OpenTAP = openTAP
	}
	return &Server{opt: opt, started: make(chan struct{}), vm: BootConfig{ID: opt.ID, VCPUs: 1, MemoryMiB: 128}}
}

// Started is closed once InstanceStart has succeeded.
func (s *Server) Started() <-chan struct{} { return s.started }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if s.opt.Hang != "" && s.opt.Hang == r.Method+" "+r.URL.Path {
		s.record(Record{Method: r.Method, Path: r.URL.Path, Body: string(body), Fault: "firecrackerdouble: hung (FCDOUBLE_HANG)"})
		<-r.Context().Done() // until the client gives up: no answer
		return
	}
	status, out, fault := s.handle(r.Method, r.URL.Path, body)
	s.record(Record{Method: r.Method, Path: r.URL.Path, Body: string(body), Status: status, Fault: fault})
	w.Header().Set("Content-Type", "application/json")
	switch {
	case fault != "":
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": fault})
	case out != nil:
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(out)
	default:
		w.WriteHeader(status)
	}
}

func (s *Server) record(r Record) {
	if s.opt.Record == nil {
		return
	}
	b, _ := json.Marshal(r)
	s.recMu.Lock()
	defer s.recMu.Unlock()
	_, _ = s.opt.Record.Write(append(b, '\n'))
}

// handle answers one request: status, a response body for GETs, or a
// fault message.
func (s *Server) handle(method, path string, body []byte) (int, any, string) {
	if len(body) > maxPayload {
		return http.StatusBadRequest, nil, fmt.Sprintf("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), maxPayload)
	}
	op, params, ok := s.opt.Spec.Match(method, path)
	if !ok {
		return http.StatusBadRequest, nil, fmt.Sprintf("Invalid request method and/or path: %s %s.", method, path)
	}
	for _, p := range op.PathParams {
		if !resourceID.MatchString(params[p.Name]) {
			return http.StatusBadRequest, nil, faultBadID
		}
	}
	if err := s.opt.Spec.ValidateBody(op, body); err != nil {
		return http.StatusBadRequest, nil, bodyErrorPrefix + err.Error() + "."
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	key := method + " " + op.Path
	act := actionType(op, body)
	switch {
	case s.isStarted && (op.Phase == apispec.PreBoot || refusedAfterStart[key] || act == "InstanceStart"):
		return http.StatusBadRequest, nil, faultAfterStart
	case !s.isStarted && (op.Phase == apispec.PostBoot || refusedBeforeStart[key] || act == "SendCtrlAltDel" || act == "FlushMetrics"):
		return http.StatusBadRequest, nil, faultBeforeStart
	}
	status, out, fault := s.apply(key, params, body, act)
	if fault == "" && !s.isStarted && method == "PUT" && key != "PUT /logger" && key != "PUT /metrics" {
		s.configured = true
	}
	return status, out, fault
}

// actionType is the action_type of a PUT /actions body.
func actionType(op *apispec.Operation, body []byte) string {
	if op.Path != "/actions" {
		return ""
	}
	var a struct {
		ActionType string `json:"action_type"`
	}
	_ = json.Unmarshal(body, &a)
	return a.ActionType
}

// apply performs a valid request in the right phase. s.mu is held.
func (s *Server) apply(key string, params map[string]string, body []byte, act string) (int, any, string) {
	const ok = http.StatusNoContent
	bad := func(err error) (int, any, string) { return http.StatusBadRequest, nil, err.Error() }
	switch key {
	case "GET /":
		return http.StatusOK, map[string]string{"app_name": "Firecracker", "id": s.opt.ID, "state": s.state(), "vmm_version": s.opt.Spec.Version}, ""
	case "GET /version":
		return http.StatusOK, map[string]string{"firecracker_version": s.opt.Spec.Version}, ""
	case "GET /machine-config":
		return http.StatusOK, map[string]any{"vcpu_count": s.vm.VCPUs, "mem_size_mib": s.vm.MemoryMiB, "smt": s.vm.SMT}, ""
	case "PUT /boot-source":
		if err := s.putBootSource(body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /machine-config", "PATCH /machine-config":
		if err := s.putMachineConfig(body, key == "PATCH /machine-config"); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /network-interfaces/{iface_id}":
		if err := s.putNetworkInterface(params["iface_id"], body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /drives/{drive_id}":
		if err := s.putDrive(params["drive_id"], body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /mmds/config":
		if err := s.putMMDSConfig(body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /mmds":
		if err := s.putMMDS(body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /vsock":
		if err := s.putVsock(body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PATCH /vm", "PUT /snapshot/create", "PUT /snapshot/load":
		if err := s.snapshotOp(key, body); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	case "PUT /actions":
		if act != "InstanceStart" {
			break
		}
		if err := s.instanceStart(); err != nil {
			return bad(err)
		}
		return ok, nil, ""
	}
	return http.StatusBadRequest, nil, fmt.Sprintf("firecrackerdouble: %s is valid but not modelled by the test double", key)
}

func (s *Server) state() string {
	if s.isStarted && s.paused {
		return "Paused"
	}
	if s.isStarted {
		return "Running"
	}
	return "Not started"
}

func (s *Server) instanceStart() error {
	if !s.hasKernel {
		return errors.New(faultNoKernel)
	}
	if s.opt.Boot != nil {
		if err := s.opt.Boot(s.vm); err != nil {
			return fmt.Errorf("Failed to start microVM: %w", err)
		}
	}
	s.isStarted = true
	close(s.started)
	return nil
}
