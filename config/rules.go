package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The rules below check one value each and return nil or a problem that
// does not repeat the field's name: the validator adds it.

var errMissing = errors.New("must be set")

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// rule pairs a field with the outcome of its check; the validator's tables
// are lists of rules.
type rule struct {
	f   field
	err error
}

func required(s string) error {
	if s == "" {
		return errMissing
	}
	return nil
}

func oneOf(s string, allowed ...string) error {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return errorf("%q is not one of %s", s, strings.Join(allowed, ", "))
}

func between(n, lo, hi int) error {
	if n < lo || n > hi {
		return errorf("%d is not between %d and %d", n, lo, hi)
	}
	return nil
}

func atLeast(n, lo int) error {
	if n < lo {
		return errorf("%d is less than %d", n, lo)
	}
	return nil
}

func matches(s string, re *regexp.Regexp, what string) error {
	if s == "" {
		return errMissing
	}
	if !re.MatchString(s) {
		return errorf("%q is not %s", s, what)
	}
	return nil
}

func absolute(p string) error {
	if p == "" {
		return errMissing
	}
	if !filepath.IsAbs(p) {
		return errorf("%q is not an absolute path", p)
	}
	return nil
}

func durationAtLeast(d, lo time.Duration) error {
	if d < lo {
		return errorf("%s is less than %s", shortDuration(d), shortDuration(lo))
	}
	return nil
}

func notNegativeDuration(d time.Duration) error {
	if d < 0 {
		return errorf("%s is negative", shortDuration(d))
	}
	return nil
}

func positive(d time.Duration) error {
	if d <= 0 {
		return errorf("%s is not positive", shortDuration(d))
	}
	return nil
}

func ipAddr(s string) error {
	if _, err := netip.ParseAddr(s); err != nil {
		return errorf("%q is not an IP address", s)
	}
	return nil
}

var hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// hostPort accepts a TCP listen address, HOST:PORT: HOST an IP address,
// a host name or empty (every address), PORT 1-65535.
func hostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errorf("%q is not a host:port (such as 127.0.0.1:9464 or [::1]:9464)", s)
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "" && !hostnamePattern.MatchString(host) {
		return errorf("%q in %q is not an IP address or host name", host, s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errorf("port %q in %q is not a number between 1 and 65535", port, s)
	}
	return nil
}

// httpURL accepts absolute http and https URLs with a host and no user
// information: a forge's URL reaches the Nix store, the logs and, as the
// guests' URL, every VM, so a password in it would be the scope-wide
// credential handed to every job.
func httpURL(s string) error {
	if s == "" {
		return errMissing
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errorf("%q is not an absolute http(s) URL", s)
	}
	if u.User != nil {
		return errorf("%q holds a user or password: put the forge's credential in token_file", redactURL(u))
	}
	return nil
}

// existingFile accepts the absolute path of a regular file (or a link to
// one). Relative paths are refused: they would be resolved against
// whatever directory the daemon happens to run in.
func existingFile(p string) error {
	if err := absolute(p); err != nil {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return pathError(p, err)
	}
	if !fi.Mode().IsRegular() {
		return errorf("%s is not a regular file", p)
	}
	return nil
}

// existingDir accepts the absolute path of a directory (or a link to one).
func existingDir(p string) error {
	if err := absolute(p); err != nil {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return pathError(p, err)
	}
	if !fi.IsDir() {
		return errorf("%s is not a directory", p)
	}
	return nil
}

// pathError renders a file system error as "PATH: problem", once, and
// keeps it wrapped so errors.Is(err, fs.ErrNotExist) works.
func pathError(p string, err error) error {
	return fmt.Errorf("%s: %w", p, errorOnly(err))
}

// errorOnly strips the operation and path from a file system error.
func errorOnly(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// unique returns a rule-style check that reports the second and later uses
// of a name, pointing at the first.
func unique(kind string) func(name string, f field) error {
	first := map[string]string{}
	return func(name string, f field) error {
		if name == "" {
			return nil
		}
		if prev, ok := first[name]; ok {
			return errorf("duplicate %s name %q (also %s)", kind, name, prev)
		}
		first[name] = f.key
		return nil
	}
}
