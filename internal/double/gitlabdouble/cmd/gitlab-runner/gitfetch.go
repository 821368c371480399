package main

// The guest root of the e2e tests has no git, so the stand-in fetches a
// job's sources itself, as gitlab-runner's default GIT_STRATEGY=fetch
// does with the git it runs: the job's git_info.repo_url (gitlab-ci-token
// and the job token in it) over Git's smart HTTP protocol, version 2 (as
// git ≥ 2.26 asks and GitLab serves): the capability advertisement,
// ls-refs for the refs of git_info.refspecs, a fetch of their tips
// deepened to git_info.depth, then a check-out of git_info.sha into the
// builds directory. It writes the files of that commit, not a .git
// directory (the guest has no git to use one).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Bounds on what a server may send.
const (
	maxPktLen   = 65520     // a pkt-line's largest length, by Git's protocol
	maxPackSize = 256 << 20 // a fetched pack
	// maxBody bounds an answer: a pack of maxPackSize in pkt-lines
	// (4 bytes of length and 1 of sideband each), and 1 MiB for the
	// sections before it.
	maxBody = maxPackSize + (maxPackSize/(maxPktLen-5)+1)*5 + 1<<20
)

// errAuth is a fetch GitLab refused for its credentials (401 or 403).
var errAuth = errors.New("authentication failed")

// gitFetch is one fetch of a repository over smart HTTP v2.
type gitFetch struct {
	http       *http.Client
	base       string // the repository URL, without credentials
	user, pass string
}

func newGitFetch(hc *http.Client, repoURL string) (*gitFetch, error) {
	u, err := url.Parse(repoURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("repo_url is not an http(s) URL")
	}
	f := &gitFetch{http: hc}
	if u.User != nil {
		f.user = u.User.Username()
		f.pass, _ = u.User.Password()
	}
	u.User = nil
	f.base = strings.TrimRight(u.String(), "/")
	return f, nil
}

// do sends one request to the repository and returns the response body
// (its reader bounded), or the error git would report.
func (f *gitFetch) do(ctx context.Context, method, path, contentType string, body []byte) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Git-Protocol", "version=2")
	req.Header.Set("User-Agent", "git/2.45.1.stand-in")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Accept", "application/x-git-upload-pack-result")
	}
	if f.user != "" {
		req.SetBasicAuth(f.user, f.pass)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unable to access '%s/': %w", f.base, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxBody), resp.Body}, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("%w for '%s/' (HTTP %d)", errAuth, f.base, resp.StatusCode)
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("unable to access '%s/': The requested URL returned error: %d", f.base, resp.StatusCode)
	}
}

// pktReader reads pkt-lines.
type pktReader struct{ r *bufio.Reader }

// Special packets: flush (0000), delim (0001), response-end (0002).
var errFlush, errDelim = errors.New("flush-pkt"), errors.New("delim-pkt")

func (p pktReader) next() ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		return nil, fmt.Errorf("reading a pkt-line: %w", err)
	}
	n, err := strconv.ParseUint(string(h[:]), 16, 16)
	if err != nil {
		return nil, fmt.Errorf("bad pkt-line length %q", h[:])
	}
	switch {
	case n == 0:
		return nil, errFlush
	case n == 1:
		return nil, errDelim
	case n < 4 || n > maxPktLen:
		return nil, fmt.Errorf("bad pkt-line length %d", n)
	}
	b := make([]byte, n-4)
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, fmt.Errorf("reading a pkt-line: %w", err)
	}
	return b, nil
}

// line is the next packet as text without its newline; flush and delim
// come back as errors.
func (p pktReader) line() (string, error) {
	b, err := p.next()
	return strings.TrimSuffix(string(b), "\n"), err
}

func pkt(buf *bytes.Buffer, s string) { fmt.Fprintf(buf, "%04x%s", len(s)+4, s) }

// advertise checks the server speaks protocol v2 with fetch and ls-refs.
func (f *gitFetch) advertise(ctx context.Context) error {
	body, err := f.do(ctx, http.MethodGet, "/info/refs?service=git-upload-pack", "", nil)
	if err != nil {
		return err
	}
	defer body.Close()
	p := pktReader{bufio.NewReader(body)}
	l, err := p.line()
	if err == nil && l == "# service=git-upload-pack" {
		// A v0 answer starts so; a v2 one may (git http-backend's does
		// not), as git's remote-curl accepts.
		if _, err := p.next(); err != errFlush {
			return fmt.Errorf("smart HTTP: no flush after the service line")
		}
		l, err = p.line()
	}
	if err != nil || l != "version 2" {
		return fmt.Errorf("the server does not speak protocol version 2 (first line %q, %v)", l, err)
	}
	caps := map[string]string{}
	for {
		l, err := p.line()
		if err == errFlush {
			break
		}
		if err != nil {
			return err
		}
		k, v, _ := strings.Cut(l, "=")
		caps[k] = v
	}
	if _, ok := caps["ls-refs"]; !ok {
		return errors.New("the server offers no ls-refs")
	}
	if v, ok := caps["fetch"]; !ok || !strings.Contains(" "+v+" ", " shallow ") {
		return fmt.Errorf("the server offers no shallow fetch (fetch=%q)", v)
	}
	return nil
}

// command sends a protocol v2 command with its arguments and returns
// the answer's body, to close, and its pkt-line reader.
func (f *gitFetch) command(ctx context.Context, name string, args []string) (io.Closer, pktReader, error) {
	var req bytes.Buffer
	pkt(&req, "command="+name+"\n")
	pkt(&req, "agent=git/2.45.1.stand-in\n")
	req.WriteString("0001")
	for _, a := range args {
		pkt(&req, a+"\n")
	}
	req.WriteString("0000")
	body, err := f.do(ctx, http.MethodPost, "/git-upload-pack", "application/x-git-upload-pack-request", req.Bytes())
	if err != nil {
		return nil, pktReader{}, err
	}
	return body, pktReader{bufio.NewReader(body)}, nil
}

// lsRefs lists the refs under the refspecs' sources, name -> object ID.
func (f *gitFetch) lsRefs(ctx context.Context, prefixes []string) (map[string]string, error) {
	args := make([]string, len(prefixes))
	for i, pr := range prefixes {
		args[i] = "ref-prefix " + pr
	}
	body, p, err := f.command(ctx, "ls-refs", args)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	refs := map[string]string{}
	for {
		l, err := p.line()
		if err == errFlush {
			return refs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("ls-refs: %w", err)
		}
		oid, name, ok := strings.Cut(l, " ")
		if !ok || len(oid) != 40 {
			return nil, fmt.Errorf("ls-refs: bad line %q", l)
		}
		name, _, _ = strings.Cut(name, " ")
		refs[name] = oid
	}
}

// fetchPack asks for wants, deepened to depth (0: whole history), and
// returns the pack.
func (f *gitFetch) fetchPack(ctx context.Context, wants []string, depth int) ([]byte, error) {
	args := []string{"ofs-delta", "no-progress"}
	for _, w := range wants {
		args = append(args, "want "+w)
	}
	if depth > 0 {
		args = append(args, fmt.Sprintf("deepen %d", depth))
	}
	body, p, err := f.command(ctx, "fetch", append(args, "done"))
	if err != nil {
		return nil, err
	}
	defer body.Close()
	// Sections: shallow-info (with a deepen), wanted-refs, packfile.
	for {
		l, err := p.line()
		if err != nil {
			return nil, fmt.Errorf("fetch: no packfile section: %w", err)
		}
		if l == "packfile" {
			break
		}
		for { // skip the section's lines up to its delimiter
			if _, err := p.next(); err == errDelim {
				break
			} else if err != nil {
				return nil, fmt.Errorf("fetch: in section %s: %w", l, err)
			}
		}
	}
	var pack bytes.Buffer
	for {
		b, err := p.next()
		if err == errFlush {
			return pack.Bytes(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("fetch: packfile: %w", err)
		}
		if len(b) == 0 {
			continue
		}
		switch b[0] {
		case 1:
			if pack.Len()+len(b) > maxPackSize {
				return nil, fmt.Errorf("fetch: the pack is over %d bytes", maxPackSize)
			}
			pack.Write(b[1:])
		case 2: // progress
		case 3:
			return nil, fmt.Errorf("remote error: %s", strings.TrimSpace(string(b[1:])))
		default:
			return nil, fmt.Errorf("fetch: bad sideband %d", b[0])
		}
	}
}

// fetchedAs is where the refspecs put the remote ref: a refspec
// +<src>:<dst> names a ref, or a pattern ending in * on both sides.
func fetchedAs(refspecs []string, ref string) []string {
	var out []string
	for _, rs := range refspecs {
		src, dst, _ := strings.Cut(strings.TrimPrefix(rs, "+"), ":")
		if p, glob := strings.CutSuffix(src, "*"); ref == src {
			out = append(out, dst)
		} else if glob && strings.HasPrefix(ref, p) {
			out = append(out, strings.TrimSuffix(dst, "*")+ref[len(p):])
		}
	}
	return out
}

// fetchSources fetches the job's repository and checks its commit out
// into dir, as gitlab-runner's GIT_STRATEGY=fetch does into a fresh
// builds directory.
func fetchSources(ctx context.Context, hc *http.Client, repoURL string, refspecs []string, sha string, depth int, dir string, log io.Writer) error {
	f, err := newGitFetch(hc, repoURL)
	if err != nil {
		return err
	}
	if depth > 0 {
		fmt.Fprintf(log, "Fetching changes with git depth set to %d...\n", depth)
	} else {
		fmt.Fprintf(log, "Fetching changes...\n")
	}
	fmt.Fprintf(log, "Created fresh repository.\n")
	if err := f.advertise(ctx); err != nil {
		return err
	}
	var prefixes []string
	for _, rs := range refspecs {
		src, _, _ := strings.Cut(strings.TrimPrefix(rs, "+"), ":")
		prefixes = append(prefixes, strings.TrimSuffix(src, "*"))
	}
	refs, err := f.lsRefs(ctx, prefixes)
	if err != nil {
		return err
	}
	seen, wants := map[string]bool{}, []string(nil)
	for ref, oid := range refs {
		if len(fetchedAs(refspecs, ref)) > 0 && !seen[oid] {
			seen[oid] = true
			wants = append(wants, oid)
		}
	}
	if len(wants) == 0 {
		return fmt.Errorf("couldn't find remote ref %s", strings.Join(prefixes, " "))
	}
	pack, err := f.fetchPack(ctx, wants, depth)
	if err != nil {
		return err
	}
	// As git prints the refs a fetch updated, one per refspec match.
	var updated []string
	for ref := range refs {
		for _, dst := range fetchedAs(refspecs, ref) {
			updated = append(updated, fmt.Sprintf(" * [new ref]  %s -> %s", ref, dst))
		}
	}
	slices.Sort(updated)
	fmt.Fprintf(log, "From %s\n%s\n", f.base, strings.Join(updated, "\n"))
	objs, err := readPack(pack, maxUnpacked)
	if err != nil {
		return err
	}
	short := sha
	if len(short) > 8 {
		short = short[:8]
	}
	fmt.Fprintf(log, "Checking out %s as detached HEAD...\n", short)
	return checkout(objs, sha, dir, budget{files: maxCheckoutFiles, bytes: maxCheckoutBytes})
}
