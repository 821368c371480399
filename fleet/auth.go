package fleet

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// authOptions are the NATS options that authenticate this host: the
// credentials file, or the token read from TokenFile (read here, so the
// token never passes through argv or the Nix store). Neither: none (the
// config refuses that unless insecure_no_auth is set).
func authOptions(o Options) ([]nats.Option, error) {
	var opts []nats.Option
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.TokenFile != "" {
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: read the NATS token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, fmt.Errorf("fleet: NATS token file %s is empty", o.TokenFile)
		}
		opts = append(opts, nats.Token(tok))
	}
	return opts, nil
}
