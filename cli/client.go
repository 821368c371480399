package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixos-fireactions/nixos-fireactions/api"
)

// Where the client commands find the API unless told otherwise.
const (
	defaultSocket  = "/run/fireactions/api.sock"
	envSocket      = "FIREACTIONS_SOCKET"
	envURL         = "FIREACTIONS_URL"
	envTokenFile   = "FIREACTIONS_TOKEN_FILE"
	requestTimeout = 30 * time.Second
)

// clientOpts are the flags every API client command shares.
type clientOpts struct {
	socket, url, tokenFile string
	output                 string // table or json; empty where not offered
}

// addClientFlags adds --socket, --url, --token-file and, with output,
// -o. On a parent command they are persistent, so its subcommands take
// them too.
func addClientFlags(cmd *cobra.Command, o *clientOpts, persistent, output bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVar(&o.socket, "socket", defaultSocket, "API unix socket (env "+envSocket+")")
	fs.StringVar(&o.url, "url", "", "API base URL, http(s)://host:port, instead of the socket (env "+envURL+")")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token for --url (env "+envTokenFile+")")
	if output {
		fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	}
}

// flagChanged reports whether the user set a flag, on cmd or a parent.
func flagChanged(cmd *cobra.Command, name string) bool {
	f := cmd.Flag(name)
	return f != nil && f.Changed
}

// client resolves the flags and environment into an API client. Flags
// win over the environment; --url or FIREACTIONS_URL selects TCP.
func (o *clientOpts) client(cmd *cobra.Command) (*apiClient, error) {
	if cmd.Flag("output") != nil && o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", o.output)
	}
	socketSet, urlSet := flagChanged(cmd, "socket"), flagChanged(cmd, "url")
	if socketSet && urlSet {
		return nil, errors.New("give --socket or --url, not both")
	}
	socket, base := o.socket, o.url
	if !socketSet && !urlSet {
		if v := os.Getenv(envURL); v != "" {
			base = v
		} else if v := os.Getenv(envSocket); v != "" {
			socket = v
		}
	}
	tokenFile := o.tokenFile
	if !flagChanged(cmd, "token-file") {
		tokenFile = os.Getenv(envTokenFile)
	}
	var token string
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("token file %s is empty", tokenFile)
		}
	}

	if base == "" {
		if socket == "" {
			return nil, errors.New("--socket is empty")
		}
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		}
		return &apiClient{base: "http://fireactions", hc: &http.Client{Transport: tr}, token: token,
			where: "unix socket " + socket}, nil
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http(s)://host[:port]", base)
	}
	if token != "" && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: sending the token to %s without TLS\n", u.Host)
	}
	return &apiClient{base: strings.TrimRight(u.String(), "/"), hc: &http.Client{}, token: token,
		where: u.Redacted()}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiClient calls the orchestrator's API.
type apiClient struct {
	base  string
	hc    *http.Client
	token string
	where string // for messages
}

// apiError is an error answer from the server, with its message.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return e.Message }

// call sends one request and returns the body of a 2xx answer. Other
// answers become an *apiError carrying the server's message.
func (c *apiClient) call(ctx context.Context, method, path string, body any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, rd)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer from %s: %w", c.where, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, responseError(resp.StatusCode, resp.Status, b)
	}
	return b, nil
}

// stream copies a 2xx answer's body to w as it arrives.
func (c *apiClient) stream(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return responseError(resp.StatusCode, resp.Status, b)
	}
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("stream from %s: %w", c.where, err)
	}
	return nil
}

func (c *apiClient) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "fireactions/"+Version)
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the fireactions API at %s (is `fireactions serve` running? see --socket, --url): %w", c.where, err)
	}
	return resp, nil
}

// responseError turns an error answer into the server's message.
func responseError(code int, status string, body []byte) error {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &apiError{Status: code, Message: e.Error}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		return &apiError{Status: code, Message: "HTTP " + status}
	}
	return &apiError{Status: code, Message: "HTTP " + status + ": " + msg}
}

// printJSON writes an answer indented, as -o json.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("the API answered invalid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// decodeAnswer decodes a 2xx answer for a table.
func decodeAnswer(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the API answered unexpected JSON: %w", err)
	}
	return nil
}
