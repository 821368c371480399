package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// mirror is one pull-through cache of a registry: where it is, and the
// repository prefix under which it serves that registry's images ("" at
// its root).
type mirror struct {
	scheme, host, prefix string
}

// parseMirror splits a mirror's base URL (scheme, host[:port], optional
// path) into its parts.
func parseMirror(s string) (mirror, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return mirror{}, fmt.Errorf("mirror %q: %w", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return mirror{}, fmt.Errorf("mirror %q: the scheme must be http or https", s)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return mirror{}, fmt.Errorf("mirror %q: want scheme://host[:port][/prefix]", s)
	}
	return mirror{scheme: u.Scheme, host: u.Host, prefix: strings.Trim(u.Path, "/")}, nil
}

// registryKey checks a registry name used as a directory and table name:
// host[:port], nothing that could leave certs.d.
func registryKey(r string) error {
	if r == "" || r == "." || r == ".." || strings.ContainsAny(r, "/\\\"\n\x00") {
		return fmt.Errorf("registry %q is not a host[:port]", r)
	}
	return nil
}

// upstreamServer is the URL containerd uses for a registry itself.
func upstreamServer(registry string) string {
	if registry == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + registry
}

// containerdHosts renders containerd's certs.d/<registry>/hosts.toml: the
// mirrors in order, pull and resolve only, then the registry. A mirror
// with a prefix is addressed by its full API path (override_path).
func containerdHosts(registry string, mirrors []mirror) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by fireactions-agent: pull-through mirrors of %s.\n", registry)
	fmt.Fprintf(&b, "server = %s\n", tomlString(upstreamServer(registry)))
	for _, m := range mirrors {
		host := m.scheme + "://" + m.host
		if m.prefix != "" {
			host += "/v2/" + m.prefix
		}
		fmt.Fprintf(&b, "\n[host.%s]\n", tomlString(host))
		b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
		if m.prefix != "" {
			b.WriteString("  override_path = true\n")
		}
	}
	return b.String()
}

// buildkitMirrors renders BuildKit's registry tables: each registry's
// mirrors as host[:port][/prefix], and plain HTTP for the mirror hosts
// served over http.
func buildkitMirrors(byRegistry map[string][]mirror) string {
	var b strings.Builder
	b.WriteString("# Written by fireactions-agent: pull-through mirrors.\n")
	plain := map[string]bool{}
	for _, reg := range slices.Sorted(maps.Keys(byRegistry)) {
		var list []string
		for _, m := range byRegistry[reg] {
			list = append(list, tomlString(strings.TrimSuffix(m.host+"/"+m.prefix, "/")))
			if m.scheme == "http" {
				plain[m.host] = true
			}
		}
		fmt.Fprintf(&b, "\n[registry.%s]\n  mirrors = [%s]\n", tomlString(reg), strings.Join(list, ", "))
	}
	for _, host := range slices.Sorted(maps.Keys(plain)) {
		if _, ok := byRegistry[host]; ok {
			continue // a mirror that is also a mirrored registry keeps its table
		}
		fmt.Fprintf(&b, "\n[registry.%s]\n  http = true\n", tomlString(host))
	}
	return b.String()
}

// dockerDaemonJSON merges the guest's settings into an existing
// daemon.json (nil: none): Docker's registry-mirrors, which can only
// mirror Docker Hub and only from a mirror's root, ours first; and, when
// group is set and the file names none, the group its socket belongs to.
// Every other key of the image's file is kept as it was.
//
// nets, when set, become "bip" and "default-address-pools" (/24s), unless
// the image's daemon.json sets them: the image's choice wins, unless it
// overlaps what nets were chosen to avoid (an error naming the field).
func dockerDaemonJSON(existing []byte, mirrors []mirror, group string, nets *dockerNets) ([]byte, error) {
	doc := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(existing)) > 0 {
		if err := json.Unmarshal(existing, &doc); err != nil {
			return nil, fmt.Errorf("the image's daemon.json: %w", err)
		}
	}
	var list []string
	for _, m := range mirrors {
		if m.prefix == "" {
			list = append(list, m.scheme+"://"+m.host)
		}
	}
	if old, ok := doc["registry-mirrors"]; ok {
		var prev []string
		if err := json.Unmarshal(old, &prev); err != nil {
			return nil, fmt.Errorf("the image's daemon.json registry-mirrors: %w", err)
		}
		for _, p := range prev {
			if !slices.Contains(list, strings.TrimSuffix(p, "/")) {
				list = append(list, p)
			}
		}
	}
	if len(list) > 0 {
		if err := setJSON(doc, "registry-mirrors", list); err != nil {
			return nil, err
		}
	}
	if _, ok := doc["group"]; !ok && group != "" {
		if err := setJSON(doc, "group", group); err != nil {
			return nil, err
		}
	}
	if nets != nil {
		if err := checkImageNets(doc, nets.avoid); err != nil {
			return nil, err
		}
		_, hasBIP := doc["bip"]
		_, hasPools := doc["default-address-pools"]
		if !hasBIP {
			if err := setJSON(doc, "bip", nets.bip); err != nil {
				return nil, err
			}
		}
		if !hasPools {
			pools := []map[string]any{{"base": nets.pool.String(), "size": 24}}
			if err := setJSON(doc, "default-address-pools", pools); err != nil {
				return nil, err
			}
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("daemon.json: %w", err)
	}
	return out.Bytes(), nil
}

func setJSON(doc map[string]json.RawMessage, key string, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("daemon.json %s: %w", key, err)
	}
	doc[key] = bytes.TrimSpace(b.Bytes())
	return nil
}

// tomlString quotes s as a TOML basic string: only the backslash, the
// quote and control characters are escaped; everything else ($ included)
// is kept as it is.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\xef\xbf\xbd"):
			b.WriteString(`\uFFFD`) // invalid UTF-8 has no TOML spelling
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
