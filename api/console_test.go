package api

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConsoleTail(t *testing.T) {
	h, b, _ := newTestHandler(t, false)
	dir := t.TempDir()
	full := "one\ntwo\nthree\nfour\n"
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b.consoles["vm1"] = write("vm1.log", full)
	b.consoles["vm2"] = write("vm2.log", "a\nb\npartial")
	b.consoles["big"] = write("big.log", strings.Repeat("x", 100<<10)+"\nlast line\n")
	b.consoles["missing"] = filepath.Join(dir, "not-yet.log")

	cases := []struct {
		name, path string
		wantStatus int
		want       string
	}{
		{"all", "/api/v1/vms/vm1/console", 200, full},
		{"tail 2", "/api/v1/vms/vm1/console?tail=2", 200, "three\nfour\n"},
		{"tail 1", "/api/v1/vms/vm1/console?tail=1", 200, "four\n"},
		{"tail 0", "/api/v1/vms/vm1/console?tail=0", 200, ""},
		{"tail more than lines", "/api/v1/vms/vm1/console?tail=50", 200, full},
		{"tail exact lines", "/api/v1/vms/vm1/console?tail=4", 200, full},
		{"tail partial last line", "/api/v1/vms/vm2/console?tail=2", 200, "b\npartial"},
		{"tail across chunks", "/api/v1/vms/big/console?tail=1", 200, "last line\n"},
		{"follow off", "/api/v1/vms/vm1/console?tail=1&follow=0", 200, "four\n"},
		{"bad tail", "/api/v1/vms/vm1/console?tail=x", 400, ""},
		{"negative tail", "/api/v1/vms/vm1/console?tail=-1", 400, ""},
		{"bad follow", "/api/v1/vms/vm1/console?follow=maybe", 400, ""},
		{"no log file", "/api/v1/vms/missing/console", 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := do(h, "GET", tc.path, "", nil)
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.wantStatus, w.Body)
			}
			if tc.wantStatus != 200 {
				errorMessage(t, w)
				return
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Fatalf("Content-Type %q", ct)
			}
			if w.Body.String() != tc.want {
				t.Fatalf("body %q, want %q", w.Body, tc.want)
			}
		})
	}
}

// TestConsoleFollow streams a console log while it grows, then ends the
// stream when the file goes away (the VM ended).
func TestConsoleFollow(t *testing.T) {
	h, b, _ := newTestHandler(t, false)
	path := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(path, []byte("boot 1\nboot 2\nboot 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.consoles["vm1"] = path
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/v1/vms/vm1/console?tail=1&follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	lines := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			l, err := br.ReadString('\n')
			if l != "" {
				lines <- l
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	next := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("got line %q, want %q", l, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line %q within 5s", want)
		}
	}
	next("boot 3\n")

	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	appendTo("runner ready\n")
	next("runner ready\n")
	// The last bytes, written right before the file goes away, still arrive.
	appendTo("job done\n")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	next("job done\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stream ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end after the log went away")
	}
}

// TestConsoleFollowClientGone: the handler returns when the client leaves.
func TestConsoleFollowClientGone(t *testing.T) {
	h, b, _ := newTestHandler(t, false)
	path := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(path, []byte("x\n"), 0o600)
	b.consoles["vm1"] = path
	returned := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/vms/vm1/console?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || !bytes.Equal(buf, []byte("x\n")) {
		t.Fatalf("read %q, %v", buf, err)
	}
	resp.Body.Close()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still streaming after the client went away")
	}
}

func TestTailOffset(t *testing.T) {
	cases := []struct {
		body string
		n    int
		want int64
	}{
		{"", 3, 0},
		{"\n", 1, 0},
		{"\n\n", 1, 1},
		{"a\nb\n", 1, 2},
		{"a\nb\n", 2, 0},
		{"a\nb", 1, 2},
		{"a\nb\n", 0, 4},
	}
	for _, tc := range cases {
		got, err := tailOffset(strings.NewReader(tc.body), int64(len(tc.body)), tc.n)
		if err != nil || got != tc.want {
			t.Errorf("tailOffset(%q, %d) = %d, %v; want %d", tc.body, tc.n, got, err, tc.want)
		}
	}
}
