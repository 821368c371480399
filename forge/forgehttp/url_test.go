package forgehttp

import (
	"strings"
	"testing"
)

func TestBaseURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:3000", "https://gitea.example.com/sub/"} {
		if u, err := BaseURL(ok); err != nil || u.String() != ok {
			t.Errorf("BaseURL(%q) = %v, %v; want it as it is", ok, u, err)
		}
	}
	for _, bad := range []string{"", "gitea.example.com", "/api/v1", "ftp://gitea.example.com", "http://", "http://%zz", "unix:///run/gitea.sock"} {
		if _, err := BaseURL(bad); err == nil || !strings.Contains(err.Error(), "is not an absolute http(s) URL") {
			t.Errorf("BaseURL(%q): %v, want refused", bad, err)
		}
	}
}
