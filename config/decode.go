package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var durationType = reflect.TypeFor[time.Duration]()

// decoder strictly decodes a YAML node tree onto a Go value, recording
// where each field is and collecting every problem rather than the first.
type decoder struct {
	file  string
	pos   positions
	errs  []error
	nodes int // decoded so far, aliases expanded
}

// maxNodes bounds the values of a document, aliases expanded: the schema
// needs far fewer. A document past it is refused before it is decoded
// (expandedSize), so an alias bomb costs one walk of its own nodes.
const maxNodes = 100_000

// maxFileBytes bounds a configuration file: a large deployment's is a few
// tens of KiB.
const maxFileBytes = 4 << 20

// decodeFile decodes the one YAML document in data onto cfg, which holds
// the defaults: fields the file sets replace them, fields it leaves out or
// sets to null keep them.
func decodeFile(file string, data []byte, cfg *Config) (positions, error) {
	d := &decoder{file: file, pos: positions{}}
	if len(data) > maxFileBytes {
		return nil, d.fail(0, fmt.Sprintf("%d bytes is larger than %d (4 MiB): not a configuration file", len(data), maxFileBytes))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil, d.fail(0, "empty file")
	case err != nil:
		return nil, d.syntax(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, d.fail(next.Line, "more than one YAML document; put everything in one")
	case !errors.Is(err, io.EOF):
		return nil, d.syntax(err)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, d.fail(0, "empty file")
	}
	if n := expandedSize(&doc, map[*yaml.Node]int{}); n > maxNodes {
		return nil, d.fail(0, fmt.Sprintf("aliases expand the document to more than %d values; write the values out or use fewer aliases", maxNodes))
	}
	d.value(doc.Content[0], reflect.ValueOf(cfg).Elem(), field{})
	return d.pos, errors.Join(d.errs...)
}

// expandedSize is the number of nodes under n with every alias replaced
// by what it refers to, counting stopped past maxNodes. Each node's size
// is computed once (memo), so the walk is linear in the document's own
// nodes however the aliases nest.
func expandedSize(n *yaml.Node, memo map[*yaml.Node]int) int {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if s, ok := memo[n]; ok {
		return s
	}
	memo[n] = maxNodes + 1 // an alias to an enclosing node: refused, not looped on
	size := 1
	for _, c := range n.Content {
		if size += expandedSize(c, memo); size > maxNodes {
			size = maxNodes + 1
			break
		}
	}
	memo[n] = size
	return size
}

// fail is a problem with the file as a whole.
func (d *decoder) fail(line int, msg string) error {
	return &FieldError{File: d.file, Line: line, Err: errors.New(msg)}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax turns yaml.v3's "yaml: line N: problem" into FILE:N: problem.
func (d *decoder) syntax(err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return d.fail(line, m[2])
	}
	return d.fail(0, strings.TrimPrefix(msg, "yaml: "))
}

// errorf records a problem with the value of f at node n.
func (d *decoder) errorf(n *yaml.Node, f field, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{File: d.file, Line: n.Line, Field: f.label, Err: fmt.Errorf(format, args...)})
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// describe names what a node is, for "expected X, found Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return strconv.Quote(n.Value)
	}
}

// value decodes n onto v. A null leaves v as it is (the default).
func (d *decoder) value(n *yaml.Node, v reflect.Value, f field) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if d.nodes++; d.nodes == maxNodes {
		d.errorf(n, f, "too many values (more than %d, aliases expanded)", maxNodes)
	}
	if d.nodes >= maxNodes {
		return
	}
	if _, ok := d.pos[f.key]; !ok && f.key != "" {
		d.pos[f.key] = n.Line // list elements; mapping values have their key's line
	}
	if isNull(n) {
		return
	}
	if v.Type() == durationType {
		d.duration(n, v, f)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, v, f)
	case reflect.Slice:
		d.sequence(n, v, f)
	case reflect.Pointer:
		before := len(d.errs)
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), f)
		if len(d.errs) == before {
			v.Set(p)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, f, "expected a string, found %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			d.errorf(n, f, "cannot parse %s as an integer", describe(n))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.errorf(n, f, "cannot parse %s as a boolean (true or false)", describe(n))
			return
		}
		v.SetBool(b)
	default:
		// Only reachable when the schema grows a type this decoder lacks;
		// TestParseKeepsEveryExplicitValue catches that.
		d.errorf(n, f, "unsupported field type %s", v.Type())
	}
}

// duration decodes a Go duration string such as "90s" or "1h30m".
func (d *decoder) duration(n *yaml.Node, v reflect.Value, f field) {
	var dur time.Duration
	var err error
	if n.Kind == yaml.ScalarNode {
		dur, err = time.ParseDuration(n.Value)
	}
	if n.Kind != yaml.ScalarNode || err != nil {
		d.errorf(n, f, `cannot parse %s as a duration (for example "90s", "2m" or "1h30m")`, describe(n))
		return
	}
	v.SetInt(int64(dur))
}

// mapping decodes a mapping onto a struct, by the fields' yaml tags.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, f field) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, f, "expected a mapping, found %s", describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		idx, known := fieldByKey(v.Type(), name)
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, f, "expected a key, found %s", describe(k))
		case name == "<<":
			d.errorf(k, f, "merge keys (<<) are not supported")
		case seen[name]:
			d.errorf(k, f.child(name), "set more than once")
		case !known:
			d.unknown(k, v.Type(), f)
		default:
			seen[name] = true
			d.pos[f.child(name).key] = k.Line
			d.value(val, v.Field(idx), f.child(name))
		}
	}
}

// unknown reports an unknown key, suggesting the known key it most likely
// misspells.
func (d *decoder) unknown(k *yaml.Node, t reflect.Type, f field) {
	msg := fmt.Sprintf("unknown key %q", k.Value)
	if f.label != "" {
		msg += " in " + f.label
	}
	if s := closest(k.Value, keys(t)); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.errs = append(d.errs, &FieldError{File: d.file, Line: k.Line, Err: errors.New(msg)})
}

// sequence decodes a list onto a slice. Pools start from PoolDefaults.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, f field) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, f, "expected a list, found %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		e := s.Index(i)
		if e.Type() == reflect.TypeFor[Pool]() {
			e.Set(reflect.ValueOf(PoolDefaults()))
		}
		d.value(item, e, f.index(i))
	}
	v.Set(s)
}

// yamlName is a struct field's YAML key, or "" when it has none.
func yamlName(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if name == "-" || !sf.IsExported() {
		return ""
	}
	return name
}

// fieldByKey finds the field of struct type t whose YAML key is key.
func fieldByKey(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" && n == key {
			return i, true
		}
	}
	return 0, false
}

// keys lists the YAML keys of struct type t.
func keys(t reflect.Type) []string {
	var ks []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" {
			ks = append(ks, n)
		}
	}
	return ks
}

// closest is the candidate within edit distance 2 of s, if any.
func closest(s string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
