package gitlab

import (
	"os"
	"testing"

	gl "gitlab.com/gitlab-org/api/client-go/v2"
)

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func userRunner(id int64, token string) *gl.UserRunner {
	return &gl.UserRunner{ID: id, Token: token}
}
