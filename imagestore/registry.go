package imagestore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// parseRef parses an image reference as Docker does: "busybox" is
// index.docker.io/library/busybox:latest.
func parseRef(s string) (name.Reference, error) {
	r, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("imagestore: image reference %q: %w", s, err)
	}
	return r, nil
}

// digestOf is the digest a reference pins, if it pins one.
func digestOf(r name.Reference) (string, bool) {
	if d, ok := r.(name.Digest); ok {
		return d.DigestStr(), true
	}
	return "", false
}

// RegistryKey is the name mirrors and credentials are filed under for a
// registry host: Docker Hub's several names are all "docker.io".
func RegistryKey(host string) string {
	h := strings.ToLower(strings.TrimSuffix(host, "/"))
	switch h {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return h
}

// CheckMirrorURL accepts a mirror's base URL: http or https, a host, and
// optionally a path: the repository prefix under which the cache serves
// the upstream's repositories (none: at its root; Zot's sync, say, keeps
// ghcr.io's under /ghcr.io).
func CheckMirrorURL(s string) error {
	_, _, err := parseMirror(s)
	return err
}

// parseMirror returns a mirror's host[:port] and prefix, as a reference
// names them.
func parseMirror(s string) (host string, insecure bool, err error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", false, fmt.Errorf("mirror %q: %w", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("mirror %q: scheme must be http or https", s)
	case u.Host == "":
		return "", false, fmt.Errorf("mirror %q: no host", s)
	case u.RawQuery != "", u.Fragment != "", u.User != nil:
		return "", false, fmt.Errorf("mirror %q: only scheme, host (and port) and a path are allowed", s)
	}
	return u.Host + strings.TrimRight(u.Path, "/"), u.Scheme == "http", nil
}

// source is one place to fetch a reference from: a mirror or the
// registry itself.
type source struct {
	ref    name.Reference
	mirror string // "" for the registry
}

// sources lists where to fetch r from: its registry's mirrors in order,
// then the registry.
func (s *Store) sources(r name.Reference) []source {
	var out []source
	repo := r.Context().RepositoryStr()
	for _, m := range s.opt.Mirrors[RegistryKey(r.Context().RegistryStr())] {
		host, insecure, err := parseMirror(m)
		if err != nil {
			s.log.Warn("skipping mirror", "err", err)
			continue
		}
		var opts []name.Option
		if insecure {
			opts = append(opts, name.Insecure)
		}
		sep := ":"
		if _, ok := r.(name.Digest); ok {
			sep = "@"
		}
		mr, err := name.ParseReference(host+"/"+repo+sep+r.Identifier(), opts...)
		if err != nil {
			s.log.Warn("skipping mirror", "mirror", m, "err", err)
			continue
		}
		out = append(out, source{ref: mr, mirror: m})
	}
	return append(out, source{ref: r})
}

// fromSources calls fn with each source until one succeeds: a mirror that
// fails is logged and the next one tried, the registry last.
func fromSources[T any](ctx context.Context, s *Store, r name.Reference, fn func(name.Reference) (T, error)) (T, error) {
	var errs []error
	for _, src := range s.sources(r) {
		if err := ctx.Err(); err != nil {
			var zero T
			return zero, err
		}
		v, err := fn(src.ref)
		if err == nil {
			if src.mirror != "" {
				s.log.Debug("image from mirror", "ref", r.Name(), "mirror", src.mirror)
			}
			return v, nil
		}
		if src.mirror != "" {
			s.log.Warn("mirror failed; trying the next source", "ref", r.Name(), "mirror", src.mirror, "err", err)
		}
		errs = append(errs, err)
	}
	var zero T
	return zero, errors.Join(errs...)
}

// remoteOptions are the options of every registry call of one pull.
func (s *Store) remoteOptions(ctx context.Context, c *counter) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(s.opt.Keychain),
		remote.WithPlatform(s.opt.Platform),
		remote.WithTransport(c.transport(remote.DefaultTransport)),
		remote.WithUserAgent("fireactions"),
		// The client's own limit on parallel blob fetches (4 unless set)
		// would otherwise cap the prefetcher's.
		remote.WithJobs(s.downloads()),
	}
}

// imageOf picks the image of the store's platform from a descriptor that
// may be an index.
func imageOf(d *remote.Descriptor) (v1.Image, error) {
	img, err := d.Image()
	if err != nil {
		return nil, fmt.Errorf("imagestore: %s: %w", d.Digest, err)
	}
	return img, nil
}
