// Package apispec holds HTTP requests to Firecracker's own published API
// description (its Swagger 2.0 file): which methods and paths exist, what
// their bodies must look like, and which are pre-boot or post-boot only.
// Firecracker cannot run on hosts without KVM, so its test double checks
// every request the driver sends against this description instead of
// against our own reading of the API.
//
// The validator covers what the description uses: type, required,
// properties, additionalProperties, enum, minimum, maximum, items, integer
// formats (int32, int64) and $ref to #/definitions. A schema keyword it
// does not know fails Load, so nothing in the file is silently ignored.
// Objects whose schema leaves additionalProperties unset are closed:
// Firecracker deserializes its configuration structs with unknown fields
// denied, so an unset additionalProperties means false here; true or a
// schema opens the object.
package apispec

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Phase says when Firecracker accepts an operation.
type Phase int

const (
	// Anytime operations work before and after InstanceStart.
	Anytime Phase = iota
	// PreBoot operations are refused once the microVM has started.
	PreBoot
	// PostBoot operations are refused before the microVM has started.
	PostBoot
)

func (p Phase) String() string {
	switch p {
	case PreBoot:
		return "pre-boot only"
	case PostBoot:
		return "post-boot only"
	}
	return "any time"
}

// Spec is a loaded API description.
type Spec struct {
	Version     string // info.version, e.g. 1.17.0-dev
	Operations  []*Operation
	Definitions map[string]*Schema
}

// Operation is one method on one path template.
type Operation struct {
	Method       string // PUT, PATCH, GET
	Path         string // template, e.g. /drives/{drive_id}
	ID           string // operationId
	Summary      string
	Description  string
	Body         *Schema // nil when the operation takes no body
	BodyRequired bool
	PathParams   []Parameter
	// Phase is what the summary and description say: "Pre-boot only",
	// "Post-boot only", or "will fail after machine startup".
	Phase Phase
}

// Parameter is a path parameter.
type Parameter struct {
	Name     string
	Type     string
	Required bool
}

// Load parses a Swagger 2.0 description.
func Load(data []byte) (*Spec, error) {
	var raw struct {
		Swagger string `yaml:"swagger"`
		Info    struct {
			Version string `yaml:"version"`
		} `yaml:"info"`
		Paths       map[string]map[string]rawOperation `yaml:"paths"`
		Definitions map[string]*Schema                 `yaml:"definitions"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("apispec: parse: %w", err)
	}
	if raw.Swagger != "2.0" {
		return nil, fmt.Errorf("apispec: swagger %q, want 2.0", raw.Swagger)
	}
	s := &Spec{Version: raw.Info.Version, Definitions: raw.Definitions}
	for path, methods := range raw.Paths {
		for method, ro := range methods {
			op, err := ro.operation(strings.ToUpper(method), path)
			if err != nil {
				return nil, fmt.Errorf("apispec: %s %s: %w", strings.ToUpper(method), path, err)
			}
			s.Operations = append(s.Operations, op)
		}
	}
	sort.Slice(s.Operations, func(i, j int) bool {
		a, b := s.Operations[i], s.Operations[j]
		return a.Path+" "+a.Method < b.Path+" "+b.Method
	})
	if err := s.checkRefs(); err != nil {
		return nil, err
	}
	return s, nil
}

type rawOperation struct {
	Summary     string `yaml:"summary"`
	Description string `yaml:"description"`
	OperationID string `yaml:"operationId"`
	Parameters  []struct {
		Name     string  `yaml:"name"`
		In       string  `yaml:"in"`
		Required bool    `yaml:"required"`
		Type     string  `yaml:"type"`
		Schema   *Schema `yaml:"schema"`
	} `yaml:"parameters"`
}

func (ro rawOperation) operation(method, path string) (*Operation, error) {
	op := &Operation{Method: method, Path: path, ID: ro.OperationID, Summary: ro.Summary, Description: ro.Description}
	for _, p := range ro.Parameters {
		switch p.In {
		case "body":
			if p.Schema == nil {
				return nil, fmt.Errorf("body parameter %q has no schema", p.Name)
			}
			op.Body, op.BodyRequired = p.Schema, p.Required
		case "path":
			op.PathParams = append(op.PathParams, Parameter{Name: p.Name, Type: p.Type, Required: p.Required})
		default:
			return nil, fmt.Errorf("parameter %q in %q is not supported", p.Name, p.In)
		}
	}
	text := ro.Summary + " " + ro.Description
	switch {
	case strings.Contains(text, "Pre-boot only"), strings.Contains(text, "will fail after machine startup"):
		op.Phase = PreBoot
	case strings.Contains(text, "Post-boot only"):
		op.Phase = PostBoot
	}
	return op, nil
}

// checkRefs makes sure every $ref names a definition, so validation never
// meets a dangling one.
func (s *Spec) checkRefs() error {
	var errs []string
	var walk func(where string, sc *Schema)
	walk = func(where string, sc *Schema) {
		if sc == nil {
			return
		}
		if sc.Ref != "" {
			if _, err := s.resolve(sc); err != nil {
				errs = append(errs, where+": "+err.Error())
			}
		}
		for name, p := range sc.Properties {
			walk(where+"."+name, p)
		}
		walk(where+"[]", sc.Items)
		walk(where+"{}", sc.AdditionalProperties.Schema)
	}
	for name, d := range s.Definitions {
		walk(name, d)
	}
	for _, op := range s.Operations {
		walk(op.Method+" "+op.Path, op.Body)
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("apispec: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Match finds the operation for method and a concrete path, with the path
// parameters' values. ok is false when the path exists for no method or
// not for this one.
func (s *Spec) Match(method, path string) (op *Operation, params map[string]string, ok bool) {
	for _, o := range s.Operations {
		if o.Method != method {
			continue
		}
		if p, matched := matchTemplate(o.Path, path); matched {
			return o, p, true
		}
	}
	return nil, nil, false
}

// Operation returns the operation with a path template and method, for
// tests and tables.
func (s *Spec) Operation(method, template string) *Operation {
	for _, o := range s.Operations {
		if o.Method == method && o.Path == template {
			return o
		}
	}
	return nil
}

func matchTemplate(template, path string) (map[string]string, bool) {
	ts, ps := strings.Split(template, "/"), strings.Split(path, "/")
	if len(ts) != len(ps) {
		return nil, false
	}
	params := map[string]string{}
	for i, t := range ts {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			if ps[i] == "" {
				return nil, false
			}
			params[t[1:len(t)-1]] = ps[i]
			continue
		}
		if t != ps[i] {
			return nil, false
		}
	}
	return params, true
}
