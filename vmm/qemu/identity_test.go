package qemu

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// TestSendIdentityTellsARefusalFromNoAnswer: the guest's three answers
// on the identity port, as QEMU's socket hands them on. An
// acknowledgement is a sent identity; a refusal (the agent could not
// apply it) is an error wrapping vmm.ErrIdentityRefused, which
// warmstart.AsFallback gives its own reason (identity_refused); a port
// closed without an answer is an error that is not a refusal.
func TestSendIdentityTellsARefusalFromNoAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, answer string // "" closes without one
		wantErr      bool
		wantRefusal  bool
	}{
		{name: "acknowledged", answer: agentproto.IdentityAck},
		{name: "refused", answer: agentproto.IdentityRefused, wantErr: true, wantRefusal: true},
		{name: "no answer", wantErr: true},
		{name: "another line", answer: "identity-maybe", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "identity.sock")
			got := guestAnswering(t, sock, tc.answer)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := (&machine{identity: sock}).SendIdentity(ctx, []byte(`{"mac":"02:00:00:00:00:01"}`))
			if line := <-got; line != `{"mac":"02:00:00:00:00:01"}` {
				t.Errorf("the guest read %q; want the identity's one line", line)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("SendIdentity: %v; want an error: %v", err, tc.wantErr)
			}
			if refused := errors.Is(err, vmm.ErrIdentityRefused); refused != tc.wantRefusal {
				t.Errorf("SendIdentity: %v; a refusal: %v, want %v", err, refused, tc.wantRefusal)
			}
		})
	}
}

// guestAnswering stands in for QEMU's identity chardev with a guest
// behind it: it takes one connection on sock, reads one line, sends it
// on the returned channel and answers answer (nothing when "") before
// closing.
func guestAnswering(t *testing.T, sock, answer string) <-chan string {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		defer close(got)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- strings.TrimSuffix(line, "\n")
		if answer != "" {
			c.Write([]byte(answer + "\n"))
		}
	}()
	return got
}
