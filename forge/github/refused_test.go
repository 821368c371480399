package github

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	gh "github.com/google/go-github/v93/github"
)

// A refusal says what the scope needs once, however many callers on its
// way wrap it (a registration whose taken name's listing was refused),
// and stays the forge's answer to errors.As; another error is left as it
// is.
func TestARefusalIsSaidOnce(t *testing.T) {
	p := &Pool{scope: Scope{Kind: "org", Org: "acme"}, kind: scopeKinds["org"]}
	answer := &gh.ErrorResponse{Response: &http.Response{StatusCode: http.StatusNotFound, Request: &http.Request{Method: "GET"}}, Message: "Not Found"}
	err := p.refused(p.refused(answer))
	if n := strings.Count(err.Error(), "admin:org"); n != 1 {
		t.Fatalf("the scope's needs said %d times: %v", n, err)
	}
	if !isStatus(err, http.StatusNotFound) {
		t.Fatalf("the refusal hides GitHub's answer: %v", err)
	}
	other := errors.New("answer has no runner id or configuration")
	if got := p.refused(other); got != other {
		t.Fatalf("another error became %v", got)
	}
}
