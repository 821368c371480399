package vmm

import (
	"errors"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// TestIdentityAnswerTellsTheAcknowledgementTheRefusalAndAnythingElse: the
// guest's answer line, as read (its newline on or off): the
// acknowledgement is no error; the refusal is ErrIdentityRefused; any
// other line, or none, is an error that is no refusal and says what the
// guest answered.
func TestIdentityAnswerTellsTheAcknowledgementTheRefusalAndAnythingElse(t *testing.T) {
	for _, tc := range []struct {
		line        string
		wantErr     bool
		wantRefusal bool
		wantWords   string
	}{
		{line: agentproto.IdentityAck + "\n"},
		{line: agentproto.IdentityAck},
		{line: agentproto.IdentityRefused + "\n", wantErr: true, wantRefusal: true},
		{line: "identity-maybe\n", wantErr: true, wantWords: `it answered "identity-maybe"`},
		{line: agentproto.IdentityAck + "?\n", wantErr: true, wantWords: `it answered "identity-ok?"`},
		{line: "", wantErr: true, wantWords: "no answer"},
	} {
		err := IdentityAnswer(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("IdentityAnswer(%q) = %v; want an error: %v", tc.line, err, tc.wantErr)
		}
		if refused := errors.Is(err, ErrIdentityRefused); refused != tc.wantRefusal {
			t.Errorf("IdentityAnswer(%q) = %v; a refusal: %v, want %v", tc.line, err, refused, tc.wantRefusal)
		}
		if err != nil && !strings.Contains(err.Error(), tc.wantWords) {
			t.Errorf("IdentityAnswer(%q) = %v; want it to say %q", tc.line, err, tc.wantWords)
		}
	}
}
