package apispec

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Schema is a Swagger 2.0 schema object, limited to the keywords the
// Firecracker description uses.
type Schema struct {
	Ref                  string
	Type                 string
	Format               string
	Required             []string
	Properties           map[string]*Schema
	AdditionalProperties Additional
	Enum                 []any
	Minimum, Maximum     *float64
	Items                *Schema
}

// Additional is additionalProperties: unset, a boolean or a schema.
type Additional struct {
	Set     bool
	Allowed bool
	Schema  *Schema
}

// Documentation-only keywords: they do not constrain a value.
var docKeywords = map[string]bool{"description": true, "default": true, "readOnly": true, "example": true}

// UnmarshalYAML reads a schema and refuses keywords the validator would
// otherwise ignore.
func (s *Schema) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a schema must be a mapping", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		var err error
		switch key {
		case "$ref":
			err = val.Decode(&s.Ref)
		case "type":
			err = val.Decode(&s.Type)
		case "format":
			err = val.Decode(&s.Format)
		case "required":
			err = val.Decode(&s.Required)
		case "properties":
			err = val.Decode(&s.Properties)
		case "additionalProperties":
			s.AdditionalProperties.Set = true
			if val.Kind == yaml.ScalarNode {
				err = val.Decode(&s.AdditionalProperties.Allowed)
			} else {
				s.AdditionalProperties.Allowed = true
				err = val.Decode(&s.AdditionalProperties.Schema)
			}
		case "enum":
			err = val.Decode(&s.Enum)
		case "minimum":
			err = val.Decode(&s.Minimum)
		case "maximum":
			err = val.Decode(&s.Maximum)
		case "items":
			err = val.Decode(&s.Items)
		default:
			if !docKeywords[key] {
				return fmt.Errorf("line %d: schema keyword %q is not supported by the validator", n.Content[i].Line, key)
			}
		}
		if err != nil {
			return fmt.Errorf("line %d: %s: %w", val.Line, key, err)
		}
	}
	return nil
}

func (s *Spec) resolve(sc *Schema) (*Schema, error) {
	for depth := 0; sc.Ref != ""; depth++ {
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok || depth > 16 {
			return nil, fmt.Errorf("$ref %q cannot be resolved", sc.Ref)
		}
		next, found := s.Definitions[name]
		if !found {
			return nil, fmt.Errorf("$ref %q names no definition", sc.Ref)
		}
		sc = next
	}
	return sc, nil
}

// FieldError is a value that does not match its schema.
type FieldError struct {
	Field string // dotted location, e.g. rate_limiter.bandwidth.size; "" for the body
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// ValidateBody decodes a JSON body strictly (duplicate keys and trailing
// data are errors, numbers keep their exact text) and checks it against
// the operation's body schema.
func (s *Spec) ValidateBody(op *Operation, body []byte) error {
	if op.Body == nil {
		if len(strings.TrimSpace(string(body))) > 0 {
			return &FieldError{Msg: "this operation takes no body"}
		}
		return nil
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if op.BodyRequired {
			return &FieldError{Msg: "a body is required"}
		}
		return nil
	}
	v, err := decodeStrict(body)
	if err != nil {
		return &FieldError{Msg: err.Error()}
	}
	return s.Validate(op.Body, v)
}

// Validate checks a decoded value (from decodeStrict) against a schema and
// returns the first mismatch, in document order.
func (s *Spec) Validate(sc *Schema, v any) error {
	return s.validate(sc, v, "")
}

func (s *Spec) validate(sc *Schema, v any, at string) error {
	sc, err := s.resolve(sc)
	if err != nil {
		return &FieldError{Field: at, Msg: err.Error()}
	}
	fail := func(format string, args ...any) error {
		return &FieldError{Field: at, Msg: fmt.Sprintf(format, args...)}
	}
	switch sc.Type {
	case "object", "":
		if sc.Type == "" && len(sc.Properties) == 0 && !sc.AdditionalProperties.Set {
			return nil // an unconstrained schema
		}
		obj, ok := v.(*object)
		if !ok {
			return fail("invalid type: %s, expected an object", describe(v))
		}
		return s.validateObject(sc, obj, at)
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fail("invalid type: %s, expected an array", describe(v))
		}
		for i, e := range arr {
			if sc.Items != nil {
				if err := s.validate(sc.Items, e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
		return nil
	case "string":
		str, ok := v.(string)
		if !ok {
			return fail("invalid type: %s, expected a string", describe(v))
		}
		if len(sc.Enum) > 0 && !inEnum(sc.Enum, str) {
			return fail("unknown variant %q, expected one of %s", str, enumList(sc.Enum))
		}
		return nil
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fail("invalid type: %s, expected a boolean", describe(v))
		}
		return nil
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			return fail("invalid type: %s, expected %s", describe(v), article(sc.Type))
		}
		return checkNumber(sc, n, fail)
	}
	return fail("schema type %q is not supported by the validator", sc.Type)
}

func (s *Spec) validateObject(sc *Schema, obj *object, at string) error {
	for _, k := range obj.keys {
		child := join(at, k)
		if p, known := sc.Properties[k]; known {
			if err := s.validate(p, obj.vals[k], child); err != nil {
				return err
			}
			continue
		}
		switch a := sc.AdditionalProperties; {
		case a.Schema != nil:
			if err := s.validate(a.Schema, obj.vals[k], child); err != nil {
				return err
			}
		case a.Set && a.Allowed:
		default:
			return &FieldError{Field: at, Msg: fmt.Sprintf("unknown field %q, expected one of %s", k, fieldList(sc.Properties))}
		}
	}
	for _, r := range sc.Required {
		if _, ok := obj.vals[r]; !ok {
			return &FieldError{Field: at, Msg: fmt.Sprintf("missing field %q", r)}
		}
	}
	return nil
}

func checkNumber(sc *Schema, n json.Number, fail func(string, ...any) error) error {
	r, ok := new(big.Rat).SetString(n.String())
	if !ok {
		return fail("%s is not a number", n)
	}
	if sc.Type == "integer" {
		if !r.IsInt() || strings.ContainsAny(n.String(), ".eE") {
			return fail("invalid type: floating point %s, expected an integer", n)
		}
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		if sc.Format == "int32" {
			lo, hi = math.MinInt32, math.MaxInt32
		}
		if r.Cmp(new(big.Rat).SetInt64(lo)) < 0 || r.Cmp(new(big.Rat).SetInt64(hi)) > 0 {
			return fail("%s is out of range for %s", n, formatName(sc.Format))
		}
	}
	if sc.Minimum != nil {
		if lo := new(big.Rat).SetFloat64(*sc.Minimum); lo != nil && r.Cmp(lo) < 0 {
			return fail("%s is less than the minimum %v", n, *sc.Minimum)
		}
	}
	if sc.Maximum != nil {
		if hi := new(big.Rat).SetFloat64(*sc.Maximum); hi != nil && r.Cmp(hi) > 0 {
			return fail("%s is more than the maximum %v", n, *sc.Maximum)
		}
	}
	if len(sc.Enum) > 0 && !inEnum(sc.Enum, n.String()) {
		return fail("%s is not one of %s", n, enumList(sc.Enum))
	}
	return nil
}

func formatName(f string) string {
	if f == "" {
		return "int64"
	}
	return f
}

func article(typ string) string {
	if typ == "integer" {
		return "an integer"
	}
	return "a number"
}

func inEnum(enum []any, s string) bool {
	for _, e := range enum {
		if fmt.Sprint(e) == s {
			return true
		}
	}
	return false
}

func enumList(enum []any) string {
	parts := make([]string, len(enum))
	for i, e := range enum {
		parts[i] = fmt.Sprintf("%q", fmt.Sprint(e))
	}
	return strings.Join(parts, ", ")
}

func fieldList(props map[string]*Schema) string {
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, fmt.Sprintf("%q", k))
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("boolean %v", t)
	case string:
		return fmt.Sprintf("string %q", t)
	case json.Number:
		return "number " + t.String()
	case []any:
		return "an array"
	case *object:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
