package openapi

import (
	"encoding/json"
	"fmt"
	"net/mail"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Validate checks a decoded JSON value (json.Number for numbers) against an
// OpenAPI 3.0 schema and returns every problem, each naming where in the
// value it is ("$.runners[0].id").
func Validate(schema map[string]any, v any) []error {
	var c checker
	c.check(schema, v, "$")
	return c.errs
}

type checker struct{ errs []error }

func (c *checker) fail(at, format string, a ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, a...)))
}

// sub checks v against s on its own and returns its problems.
func sub(s map[string]any, v any, at string) []error {
	var c checker
	c.check(s, v, at)
	return c.errs
}

func (c *checker) check(s map[string]any, v any, at string) {
	if s == nil {
		return
	}
	if v == nil {
		if s["nullable"] == true || enumHas(s, nil) {
			return
		}
		if _, typed := s["type"]; typed {
			c.fail(at, "null where %v is required", s["type"])
			return
		}
	}
	for _, part := range schemas(s["allOf"]) {
		c.check(part, v, at)
	}
	if parts := schemas(s["anyOf"]); len(parts) > 0 {
		matched := false
		var first []error
		for _, part := range parts {
			errs := sub(part, v, at)
			if len(errs) == 0 {
				matched = true
				break
			}
			if first == nil {
				first = errs
			}
		}
		if !matched {
			c.fail(at, "matches none of anyOf's %d schemas (first: %v)", len(parts), first[0])
		}
	}
	if parts := schemas(s["oneOf"]); len(parts) > 0 {
		n := 0
		for _, part := range parts {
			if len(sub(part, v, at)) == 0 {
				n++
			}
		}
		if n != 1 {
			c.fail(at, "matches %d of oneOf's %d schemas, want exactly 1", n, len(parts))
		}
	}
	if v == nil {
		return
	}
	if enum, ok := s["enum"].([]any); ok && !enumHas(s, v) {
		c.fail(at, "%v is not one of %v", v, enum)
	}
	typ, _ := s["type"].(string)
	if typ == "" {
		switch {
		case s["properties"] != nil || s["additionalProperties"] != nil || s["required"] != nil:
			typ = "object"
		case s["items"] != nil:
			typ = "array"
		}
	}
	switch typ {
	case "":
	case "string":
		str, ok := v.(string)
		if !ok {
			c.fail(at, "%s is not a string", kind(v))
			return
		}
		c.format(s, str, at)
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			c.fail(at, "%s is not an integer", kind(v))
			return
		}
		if _, err := n.Int64(); err != nil {
			c.fail(at, "%s is not an integer", n)
		}
	case "number":
		n, ok := v.(json.Number)
		if !ok {
			c.fail(at, "%s is not a number", kind(v))
			return
		}
		if _, err := n.Float64(); err != nil {
			c.fail(at, "%s is not a number", n)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			c.fail(at, "%s is not a boolean", kind(v))
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			c.fail(at, "%s is not an array", kind(v))
			return
		}
		if lo, ok := number(s["minItems"]); ok && float64(len(arr)) < lo {
			c.fail(at, "%d items, fewer than minItems %v", len(arr), lo)
		}
		if hi, ok := number(s["maxItems"]); ok && float64(len(arr)) > hi {
			c.fail(at, "%d items, more than maxItems %v", len(arr), hi)
		}
		items, _ := s["items"].(map[string]any)
		for i, e := range arr {
			c.check(items, e, fmt.Sprintf("%s[%d]", at, i))
		}
	case "object":
		c.object(s, v, at)
	default:
		c.fail(at, "unsupported schema type %q", typ)
	}
}

func (c *checker) object(s map[string]any, v any, at string) {
	obj, ok := v.(map[string]any)
	if !ok {
		c.fail(at, "%s is not an object", kind(v))
		return
	}
	props, _ := s["properties"].(map[string]any)
	for _, r := range strings2(s["required"]) {
		if _, ok := obj[r]; !ok {
			c.fail(at, "required property %q is missing", r)
		}
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if ps, ok := props[k].(map[string]any); ok {
			c.check(ps, obj[k], at+"."+k)
			continue
		}
		switch ap := s["additionalProperties"].(type) {
		case bool:
			if !ap {
				c.fail(at, "property %q is not allowed", k)
			}
		case map[string]any:
			c.check(ap, obj[k], at+"."+k)
		}
	}
}

// format checks the string formats the description uses; other formats
// are annotations.
func (c *checker) format(s map[string]any, str, at string) {
	switch s["format"] {
	case "date-time":
		if _, err := time.Parse(time.RFC3339, str); err != nil {
			c.fail(at, "%q is not an RFC 3339 date-time", str)
		}
	case "uri":
		u, err := url.Parse(str)
		if err != nil || u.Scheme == "" {
			c.fail(at, "%q is not an absolute URI", str)
		}
	case "email":
		if _, err := mail.ParseAddress(str); err != nil {
			c.fail(at, "%q is not an email address", str)
		}
	}
}

func enumHas(s map[string]any, v any) bool {
	enum, ok := s["enum"].([]any)
	if !ok {
		return false
	}
	for _, e := range enum {
		if e == nil || v == nil {
			if e == nil && v == nil {
				return true
			}
			continue
		}
		if fmt.Sprint(e) == fmt.Sprint(v) && kind(e) == kind(v) {
			return true
		}
	}
	return false
}

func schemas(v any) []map[string]any {
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func strings2(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

// kind names a JSON value's type for messages.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case json.Number, float64, int:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", v), "*")
}
