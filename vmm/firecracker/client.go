package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client speaks Firecracker's API over its unix socket. It has a method
// for each request the driver sends and nothing else, so every body the
// driver can produce is visible here and checked against Firecracker's
// API description by the tests.
type Client struct {
	http    *http.Client
	timeout time.Duration
}

// DefaultCallTimeout bounds one API call when the driver is given no
// bound: connect, request and answer. Firecracker answers its pre-boot
// calls in milliseconds, InstanceStart in well under a second.
const DefaultCallTimeout = 5 * time.Second

// NewClient returns a client of the API socket at path whose every call
// must be answered within timeout (0: DefaultCallTimeout), so a VMM that
// hangs fails the call instead of blocking its caller.
func NewClient(socket string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 1,
	}
	return &Client{http: &http.Client{Transport: tr}, timeout: timeout}
}

// Close drops the client's idle connection.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// BootSource is the body of PUT /boot-source. Paths are as the VMM sees
// them: inside its chroot when jailed.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// MachineConfig is the body of PUT /machine-config. SMT is always sent:
// off unless asked for.
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id}: a virtio block device
// backed by a file. The image work adds a read-only shared root and a
// writable per-VM disk with it.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
}

// MMDSConfig is the body of PUT /mmds/config: the MMDS version and the
// guest network interfaces it answers on. The address is Firecracker's
// default, 169.254.169.254.
type MMDSConfig struct {
	Version           string   `json:"version"`
	NetworkInterfaces []string `json:"network_interfaces"`
}

// MMDSDocument is the body of PUT /mmds: the whole MMDS data store, the
// VM's non-secret metadata under "fireactions".
type MMDSDocument struct {
	Fireactions map[string]string `json:"fireactions"`
}

// action is the body of PUT /actions.
type action struct {
	ActionType string `json:"action_type"`
}

// PutBootSource sets the kernel, initrd and kernel command line.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.put(ctx, "/boot-source", b)
}

// PutMachineConfig sets vCPUs, memory and SMT.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.put(ctx, "/machine-config", m)
}

// PutNetworkInterface attaches a TAP as a guest network interface.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.put(ctx, "/network-interfaces/"+n.IfaceID, n)
}

// PutDrive adds a block device.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.put(ctx, "/drives/"+d.DriveID, d)
}

// PutMMDSConfig enables the MMDS on the given interfaces.
func (c *Client) PutMMDSConfig(ctx context.Context, m MMDSConfig) error {
	return c.put(ctx, "/mmds/config", m)
}

// PutMMDS replaces the MMDS data store.
func (c *Client) PutMMDS(ctx context.Context, d MMDSDocument) error {
	return c.put(ctx, "/mmds", d)
}

// InstanceStart boots the configured microVM.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.put(ctx, "/actions", action{ActionType: "InstanceStart"})
}

// APIError is a request Firecracker refused.
type APIError struct {
	Method, Path string
	Status       int
	Fault        string // the response's fault_message
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d: %s", e.Method, e.Path, e.Status, e.Fault)
}

func (c *Client) put(ctx context.Context, path string, body any) error {
	return c.call(ctx, http.MethodPut, path, body)
}

// call sends one request whose answer has no body but a fault.
func (c *Client) call(ctx context.Context, method, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s %s: encode body: %w", method, path, err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, method, "http://localhost"+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return c.callError(ctx, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return c.callError(ctx, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var fault struct {
		FaultMessage string `json:"fault_message"`
	}
	if json.Unmarshal(data, &fault) != nil || fault.FaultMessage == "" {
		fault.FaultMessage = strings.TrimSpace(string(data))
	}
	return &APIError{Method: method, Path: path, Status: resp.StatusCode, Fault: fault.FaultMessage}
}

// callError is why a call got no answer: the VMM did not answer within
// the call's bound (ErrNoAnswer), or the caller gave up, or the connection
// failed.
func (c *Client) callError(ctx context.Context, path string, err error) error {
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("PUT %s: %w within %s", path, ErrNoAnswer, c.timeout)
	}
	return fmt.Errorf("PUT %s: %w", path, err)
}

// ErrNoAnswer is a call the VMM did not answer within its bound: the VMM
// hangs.
var ErrNoAnswer = errors.New("the VMM did not answer")

// waitForSocket waits until the API socket accepts connections, the
// process exits (exited is closed) or ctx ends.
func waitForSocket(ctx context.Context, socket string, exited <-chan struct{}) error {
	delay := time.Millisecond
	for {
		conn, err := net.Dial("unix", socket)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("the VMM exited before its API socket accepted connections")
		case <-ctx.Done():
			return fmt.Errorf("API socket %s: %w (last: %v)", socket, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}
