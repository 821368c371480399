package monitoring

import (
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// PrometheusMade are the series Prometheus makes itself for each target
// rather than scraping them: no program exports them.
var PrometheusMade = map[string]bool{"up": true}

var (
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matchers = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	grouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	ident    = regexp.MustCompile(`\$\{?[A-Za-z_:][A-Za-z0-9_:]*\}?|[0-9][0-9A-Za-z.]*|[A-Za-z_:][A-Za-z0-9_:]*`)
)

// keywords are PromQL's words that name no metric.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "offset": true, "bool": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// MetricNames are the metric names a PromQL expression reads, sorted:
// every bare name that is not a function, an aggregation, a keyword, a
// label (in matchers or grouping), a number, a duration or a Grafana
// variable. It reads the expressions this package ships, not any PromQL:
// {__name__="x"} selectors are not seen.
func MetricNames(expr string) []string {
	s := quoted.ReplaceAllString(expr, `""`)
	for {
		next := grouping.ReplaceAllString(matchers.ReplaceAllString(s, " "), " ")
		if next == s {
			break
		}
		s = next
	}
	seen := map[string]bool{}
	for _, loc := range ident.FindAllStringIndex(s, -1) {
		w := s[loc[0]:loc[1]]
		if w[0] == '$' || (w[0] >= '0' && w[0] <= '9') || keywords[w] {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		seen[w] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// Unexported are the names of names that a scrape of /metrics (the text
// format) does not export and Prometheus does not make, sorted.
func Unexported(names []string, scrape string) []string {
	exported := map[string]bool{}
	for _, line := range strings.Split(scrape, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			exported[line[:i]] = true
		}
	}
	var out []string
	for _, n := range names {
		if !exported[n] && !PrometheusMade[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ShippedMetricNames are the metric names the alert rules and the
// dashboard read, sorted, each once.
func ShippedMetricNames() ([]string, error) {
	rules, err := Rules()
	if err != nil {
		return nil, err
	}
	qs, err := DashboardQueries()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		qs = append(qs, r.Expr)
	}
	seen := map[string]bool{}
	for _, q := range qs {
		for _, n := range MetricNames(q) {
			seen[n] = true
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}
