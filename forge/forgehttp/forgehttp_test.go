package forgehttp

import (
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCAFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing-ca.pem")
	notPEM := filepath.Join(dir, "not-a-cert.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{CAFile: missing})
	if err == nil || !strings.Contains(err.Error(), "ca_file "+missing) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file: %v, want an error naming %s that is fs.ErrNotExist", err, missing)
	}
	_, err = New(Options{CAFile: notPEM})
	if err == nil || !strings.Contains(err.Error(), "ca_file "+notPEM+" holds no PEM certificate") {
		t.Errorf("CA file without a certificate: %v, want an error naming %s", err, notPEM)
	}
}

func TestCAFileIsTrustedAlongsideTheSystemRoots(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	plain, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if plain.CA != nil {
		t.Errorf("CA without a ca_file = %q", plain.CA)
	}
	if resp, err := plain.Client.Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("a certificate no root vouches for was accepted")
	}

	c, err := New(Options{CAFile: ca, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if string(c.CA) != string(certPEM) {
		t.Errorf("CA = %q, want the file's PEM", c.CA)
	}
	resp, err := c.Client.Get(srv.URL)
	if err != nil {
		t.Fatalf("the ca_file's certificate refused: %v", err)
	}
	resp.Body.Close()
}

// TestEveryForgeConnectionIsAlike: the settings a forge driver once set
// by hand, each its own way.
func TestEveryForgeConnectionIsAlike(t *testing.T) {
	c, err := New(Options{Timeout: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport
	if c.Client.Transport != tr || c.Client.Timeout != 7*time.Second {
		t.Errorf("client = %+v, want the transport and the timeout", c.Client)
	}
	if tr.Proxy == nil || reflect.ValueOf(tr.Proxy).Pointer() != reflect.ValueOf(http.ProxyFromEnvironment).Pointer() {
		t.Error("the proxy is not the environment's")
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS = %+v, want at least 1.2", tr.TLSClientConfig)
	}
	if tr.DialContext == nil || tr.TLSHandshakeTimeout != TLSHandshakeTimeout || tr.ResponseHeaderTimeout != 7*time.Second ||
		tr.IdleConnTimeout != IdleConnTimeout || tr.MaxIdleConnsPerHost != MaxIdleConnsPerHost {
		t.Errorf("transport timeouts and idle settings: %+v", tr)
	}
	unbounded, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if unbounded.Client.Timeout != 0 || unbounded.Transport.ResponseHeaderTimeout != ResponseHeaderTimeout {
		t.Errorf("without a timeout: client %v, headers %v", unbounded.Client.Timeout, unbounded.Transport.ResponseHeaderTimeout)
	}
}
