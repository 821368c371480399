package api

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
)

// unixClient talks HTTP over the socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func waitForSocket(t *testing.T, path string, errc <-chan error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			return
		}
		select {
		case err := <-errc:
			t.Fatalf("ServeUnix returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("socket did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeUnix: the parent directory is made 0750, the socket is 0600,
// serves the API without a token, and is removed at shutdown.
func TestServeUnix(t *testing.T) {
	h, _, _ := newTestHandler(t, false)
	dir := filepath.Join(t.TempDir(), "run", "fireactions")
	path := filepath.Join(dir, "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ServeUnix(ctx, path, h) }()
	waitForSocket(t, path, errc)

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("socket mode %o, want 600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o750 {
		t.Fatalf("directory mode %o, want 750", perm)
	}

	c := unixClient(path)
	resp, err := c.Get("http://fireactions/api/v1/pools")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"small"`) {
		t.Fatalf("status %d body %s", resp.StatusCode, body)
	}

	// A second server must not take over a live socket.
	if err := ServeUnix(ctx, path, h); err == nil || !strings.Contains(err.Error(), "listening") {
		t.Fatalf("second ServeUnix on a live socket: %v", err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ServeUnix: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeUnix did not return after cancel")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left in %s: %v", dir, entries)
	}
}

// TestServeUnixStale replaces a dead socket, refuses a regular file, and
// ends a console stream promptly at shutdown.
func TestServeUnixStale(t *testing.T) {
	h, b, _ := newTestHandler(t, false)
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")

	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file

	console := filepath.Join(dir, "console.log")
	os.WriteFile(console, []byte("hello\n"), 0o600)
	b.consoles["vm1"] = console

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ServeUnix(ctx, path, h) }()
	waitForSocket(t, path, errc)
	// The stale file was replaced: the new server answers.
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = unixClient(path).Get("http://fireactions/api/v1/vms/vm1/console?follow=1")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "hello\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ServeUnix: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeUnix did not return")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown waited %v for a console stream", d)
	}

	regular := filepath.Join(dir, "not-a-socket")
	os.WriteFile(regular, []byte("keep me"), 0o600)
	if err := ServeUnix(context.Background(), regular, h); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("ServeUnix over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Fatal("regular file was touched")
	}
}

func TestServeTCP(t *testing.T) {
	h, _, _ := newTestHandler(t, true)
	if err := ServeTCP(context.Background(), "127.0.0.1:0", h, "cert.pem", "", httpguard.Limits{}); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
	// Find a free port, then serve on it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ServeTCP(ctx, addr, h, "", "", httpguard.Limits{}) }()
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = http.Get("http://" + addr + "/api/v1/pools")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d without a token, want 401", resp.StatusCode)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("ServeTCP: %v", err)
	}
}
