package githubdouble

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// appOperations are authenticated as the App (a JWT), not an installation.
var appOperations = map[string]bool{
	"apps/get-authenticated":                     true,
	"apps/list-installations":                    true,
	"apps/create-installation-access-token":      true,
	"apps/get-org-installation":                  true,
	"apps/get-repo-installation":                 true,
	"apps/get-user-installation":                 true,
	"apps/list-repos-accessible-to-installation": false,
}

// authenticate checks the Authorization header for the operation: a JWT
// for the App's own operations, else a PAT or an installation token, the
// latter only where the description enables the operation for GitHub
// Apps. It returns 0 when the caller may go on, else the answer. Callers
// hold d.mu.
func (d *Double) authenticate(c *call) (int, any) {
	scheme, cred, _ := strings.Cut(c.r.Header.Get("Authorization"), " ")
	if cred == "" {
		return http.StatusUnauthorized, basicError("Requires authentication")
	}
	if appOperations[c.op.ID] {
		if !strings.EqualFold(scheme, "Bearer") || d.verifyJWT(cred) != nil {
			return http.StatusUnauthorized, basicError("A JSON web token could not be decoded")
		}
		return 0, nil
	}
	if !strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "Bearer") {
		return http.StatusUnauthorized, basicError("Bad credentials")
	}
	for _, p := range d.o.PATs {
		if cred == p {
			c.pat = p
			return 0, nil
		}
	}
	t, ok := d.tokens[cred]
	if !ok || time.Now().After(t.expires) {
		return http.StatusUnauthorized, basicError("Bad credentials")
	}
	inst := d.installations[t.inst]
	if inst == nil || inst.gone {
		return http.StatusUnauthorized, basicError("Bad credentials")
	}
	if !c.op.EnabledForGitHubApps {
		// x-github.enabledForGitHubApps: false (the enterprise runner
		// API): GitHub refuses every installation token, whatever its
		// permissions, as it refuses a permission the App lacks.
		return http.StatusForbidden, basicError("Resource not accessible by integration")
	}
	c.inst, c.tok = inst, t
	return 0, nil
}

// verifyJWT checks an App JWT: RS256 with the App's key, issued by the
// App, not expired, at most 10 minutes long, as GitHub requires.
func (d *Double) verifyJWT(tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || d.o.AppKey == nil {
		return fmt.Errorf("not a JWT")
	}
	var head struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
		Exp int64  `json:"exp"`
	}
	if err := decodeSegment(parts[0], &head); err != nil || head.Alg != "RS256" {
		return fmt.Errorf("header")
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return fmt.Errorf("claims")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(d.o.AppKey, crypto.SHA256, sum[:], sig); err != nil {
		return err
	}
	now := time.Now().Unix()
	if claims.Iss != strconv.FormatInt(d.o.AppID, 10) || claims.Exp < now || claims.Exp-claims.Iat > 600 || claims.Iat > now+60 {
		return fmt.Errorf("claims out of bounds")
	}
	return nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// covers reports whether a token's installation (nil: a PAT) may act on
// the scope.
func (c *call) covers(s scopeKey) bool {
	in := c.inst
	if in == nil {
		return true
	}
	switch s.kind {
	case "enterprise":
		return in.targetType == "Enterprise" && strings.EqualFold(in.account, s.name)
	case "org":
		return in.targetType == "Organization" && strings.EqualFold(in.account, s.name)
	case "repo":
		owner, _, _ := strings.Cut(s.name, "/")
		if !strings.EqualFold(in.account, owner) || in.targetType == "Enterprise" {
			return false
		}
		if len(in.repos) == 0 {
			return true
		}
		for _, r := range in.repos {
			if strings.EqualFold(r, s.name) {
				return true
			}
		}
	}
	return false
}

// rateLimit is the primary rate limit: a budget per window.
type rateLimit struct {
	limit     int
	window    time.Duration
	remaining int
	reset     time.Time
}

func newRateLimit(limit int, window time.Duration) rateLimit {
	return rateLimit{limit: limit, window: window, remaining: limit, reset: time.Now().Add(window)}
}

// take spends one call and sets the rate-limit headers; it returns 0, or
// 403 once the budget is spent, as GitHub does.
func (rl *rateLimit) take(now time.Time, h http.Header) (int, any) {
	if !now.Before(rl.reset) {
		rl.remaining, rl.reset = rl.limit, now.Add(rl.window)
	}
	status := 0
	var body any
	if rl.remaining == 0 {
		status, body = http.StatusForbidden, basicError("API rate limit exceeded for installation. Check out the documentation for more information.")
	} else {
		rl.remaining--
	}
	h.Set("X-RateLimit-Limit", strconv.Itoa(rl.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(rl.remaining))
	h.Set("X-RateLimit-Used", strconv.Itoa(rl.limit-rl.remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(rl.reset.Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
	return status, body
}

// SetRateLimit replaces the primary rate limit: limit calls per window
// for each credential, every window starting now.
func (d *Double) SetRateLimit(limit int, window time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rate = newRateLimit(limit, window)
	clear(d.rates)
}

// budget is the primary rate limit of the call's credential: as at
// GitHub, the App (its JWT), each installation and each personal access
// token have their own. Callers hold d.mu.
func (d *Double) budget(c *call) *rateLimit {
	key := "app"
	switch {
	case c.inst != nil:
		key = "installation:" + strconv.FormatInt(c.inst.id, 10)
	case c.pat != "":
		key = "pat:" + c.pat
	}
	rl := d.rates[key]
	if rl == nil {
		fresh := newRateLimit(d.rate.limit, d.rate.window)
		fresh.reset = d.rate.reset
		rl = &fresh
		d.rates[key] = rl
	}
	return rl
}

// AddInstallation installs the App on an account: targetType
// Organization, User or Enterprise; repos limits a User or Organization
// installation to those repositories (OWNER/NAME). It returns its id.
func (d *Double) AddInstallation(targetType, account string, repos ...string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	in := &installation{id: d.id(), account: account, targetType: targetType, repos: repos, perms: maps.Clone(defaultPermissions)}
	d.installations[in.id] = in
	return in.id
}

// Uninstall removes an installation, as when the App is uninstalled: its
// tokens stop working and creating new ones answers 404.
func (d *Double) Uninstall(id int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if in := d.installations[id]; in != nil {
		in.gone = true
	}
}

// TokenRequests is how many installation tokens were handed out.
func (d *Double) TokenRequests() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.tokens)
}

// AddEnterprise makes orgs members of an enterprise.
func (d *Double) AddEnterprise(slug string, orgs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range orgs {
		d.enterprises[strings.ToLower(slug)] = append(d.enterprises[strings.ToLower(slug)], strings.ToLower(o))
	}
}

// AddRunnerGroup adds a runner group to an org and returns its id.
func (d *Double) AddRunnerGroup(org, name string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := &group{id: d.id(), name: name}
	d.groups[strings.ToLower(org)] = append(d.groups[strings.ToLower(org)], g)
	return g.id
}
