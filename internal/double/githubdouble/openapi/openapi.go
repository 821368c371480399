// Package openapi holds HTTP exchanges to an OpenAPI 3.0 description: it
// finds the operation a request addresses, checks the request's path and
// query parameters and JSON body, and checks a response's status and JSON
// body against the operation's schemas. It exists so a test double can be
// held to a peer's published description instead of to our own reading of
// it. It covers the schema language GitHub's REST description uses: type,
// nullable, enum, format (date-time, uri, email, int32, int64), properties,
// required, additionalProperties, items, minItems, maxItems, allOf, anyOf
// and oneOf, on a fully dereferenced document (no $ref).
package openapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Description is a parsed OpenAPI document.
type Description struct {
	ops []*Operation
}

// Operation is one method on one path template.
type Operation struct {
	ID       string // operationId
	Method   string // upper case
	Template string // e.g. /orgs/{org}/actions/runners
	// EnabledForGitHubApps is GitHub's x-github.enabledForGitHubApps:
	// false where GitHub refuses a GitHub App's installation token (the
	// enterprise runner API); true where the description says nothing.
	EnabledForGitHubApps bool
	segs                 []string
	params               []parameter
	body                 *requestBody
	// responses by status code ("201", "4XX", "default"): media type ->
	// schema; an empty map is a response without a body.
	responses map[string]map[string]media
}

type parameter struct {
	Name     string         `json:"name"`
	In       string         `json:"in"`
	Required bool           `json:"required"`
	Schema   map[string]any `json:"schema"`
}

type media struct {
	Schema   map[string]any `json:"schema"`
	Example  any            `json:"example"`
	Examples map[string]struct {
		Value any `json:"value"`
	} `json:"examples"`
}

type requestBody struct {
	Required bool             `json:"required"`
	Content  map[string]media `json:"content"`
}

// Parse reads a dereferenced OpenAPI 3.0 document.
func Parse(data []byte) (*Description, error) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := decode(data, &doc); err != nil {
		return nil, fmt.Errorf("openapi: parse description: %w", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		return nil, fmt.Errorf("openapi: version %q is not 3.0", doc.OpenAPI)
	}
	d := &Description{}
	for tmpl, item := range doc.Paths {
		var shared []parameter
		if raw, ok := item["parameters"]; ok {
			if err := decode(raw, &shared); err != nil {
				return nil, fmt.Errorf("openapi: %s parameters: %w", tmpl, err)
			}
		}
		for method, raw := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
			default:
				continue
			}
			var op struct {
				ID         string                     `json:"operationId"`
				Parameters []parameter                `json:"parameters"`
				Body       *requestBody               `json:"requestBody"`
				Responses  map[string]json.RawMessage `json:"responses"`
				XGitHub    struct {
					EnabledForGitHubApps *bool `json:"enabledForGitHubApps"`
				} `json:"x-github"`
			}
			if err := decode(raw, &op); err != nil {
				return nil, fmt.Errorf("openapi: %s %s: %w", method, tmpl, err)
			}
			o := &Operation{
				ID: op.ID, Method: strings.ToUpper(method), Template: tmpl,
				EnabledForGitHubApps: op.XGitHub.EnabledForGitHubApps == nil || *op.XGitHub.EnabledForGitHubApps,
				segs:                 strings.Split(strings.Trim(tmpl, "/"), "/"), params: append(append([]parameter(nil), shared...), op.Parameters...),
				body: op.Body, responses: map[string]map[string]media{},
			}
			for code, rraw := range op.Responses {
				var r struct {
					Content map[string]media `json:"content"`
				}
				if err := decode(rraw, &r); err != nil {
					return nil, fmt.Errorf("openapi: %s %s response %s: %w", method, tmpl, code, err)
				}
				if r.Content == nil {
					r.Content = map[string]media{}
				}
				o.responses[code] = r.Content
			}
			d.ops = append(d.ops, o)
		}
	}
	// Literal segments win over parameters: /runners/downloads before
	// /runners/{runner_id}.
	sort.Slice(d.ops, func(i, j int) bool {
		pi, pj := paramSegs(d.ops[i].segs), paramSegs(d.ops[j].segs)
		if pi != pj {
			return pi < pj
		}
		return d.ops[i].Template < d.ops[j].Template
	})
	return d, nil
}

func decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

func paramSegs(segs []string) int {
	n := 0
	for _, s := range segs {
		if strings.HasPrefix(s, "{") {
			n++
		}
	}
	return n
}

// Operations lists the described operations.
func (d *Description) Operations() []*Operation { return d.ops }

// Find returns the operation for method and path (relative to the
// server's base) and the path parameters' raw values.
func (d *Description) Find(method, path string) (*Operation, map[string]string) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for _, op := range d.ops {
		if op.Method != method || len(op.segs) != len(segs) {
			continue
		}
		vals := map[string]string{}
		ok := true
		for i, s := range op.segs {
			if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
				v, err := url.PathUnescape(segs[i])
				if err != nil || v == "" {
					ok = false
					break
				}
				vals[s[1:len(s)-1]] = v
				continue
			}
			if s != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return op, vals
		}
	}
	return nil, nil
}

// CheckRequest finds the operation a request addresses (path relative to
// the server's base) and checks its parameters and body. It returns the
// operation (nil when none matches) and every problem found.
func (d *Description) CheckRequest(method, path string, query url.Values, contentType string, body []byte) (*Operation, map[string]string, []error) {
	op, vals := d.Find(method, path)
	if op == nil {
		return nil, nil, []error{fmt.Errorf("%s %s: no such operation in the description", method, path)}
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s (%s %s): %s", op.ID, method, path, fmt.Sprintf(format, a...)))
	}
	declared := map[string]bool{}
	for _, p := range op.params {
		switch p.In {
		case "path":
			if err := checkParam(p.Schema, vals[p.Name]); err != nil {
				bad("path parameter %s: %v", p.Name, err)
			}
		case "query":
			declared[p.Name] = true
			vs, present := query[p.Name]
			if !present {
				if p.Required {
					bad("required query parameter %s is missing", p.Name)
				}
				continue
			}
			for _, v := range vs {
				if err := checkParam(p.Schema, v); err != nil {
					bad("query parameter %s=%q: %v", p.Name, v, err)
				}
			}
		}
	}
	for k := range query {
		if !declared[k] {
			bad("query parameter %s is not in the description", k)
		}
	}
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		if op.body != nil && op.body.Required {
			bad("the request body is required")
		}
	case op.body == nil:
		bad("the operation takes no request body, got %d bytes", len(body))
	default:
		mt, _, _ := mime.ParseMediaType(contentType)
		m, ok := op.body.Content[mt]
		if !ok {
			bad("request content type %q is not described", contentType)
			break
		}
		for _, err := range checkJSON(m.Schema, body) {
			bad("request body: %v", err)
		}
	}
	return op, vals, errs
}

// genericErrors are statuses GitHub may answer any operation with
// (authentication, permission, missing resources, rate limits, outages)
// whether or not the operation lists them; their body is a Basic Error.
var genericErrors = map[int]bool{401: true, 403: true, 404: true, 429: true, 500: true, 502: true, 503: true, 504: true}

// basicError is GitHub's error body: an object with a message.
var basicError = map[string]any{
	"type": "object", "required": []any{"message"},
	"properties": map[string]any{
		"message":           map[string]any{"type": "string"},
		"documentation_url": map[string]any{"type": "string"},
		"status":            map[string]any{"type": "string"},
	},
}

// CheckResponse checks a response of the operation: its status must be
// described (or a generic error), and its body must match the described
// schema, or be empty when none is described.
func (op *Operation) CheckResponse(status int, contentType string, body []byte) []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s response %d: %s", op.ID, status, fmt.Sprintf(format, a...)))
	}
	content, ok := op.response(status)
	if !ok {
		if !genericErrors[status] {
			bad("status is not in the description")
			return errs
		}
		content = map[string]media{"application/json": {Schema: basicError}}
	}
	empty := len(bytes.TrimSpace(body)) == 0
	if len(content) == 0 {
		if !empty {
			bad("the description has no body, got %d bytes", len(body))
		}
		return errs
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	m, ok := content[mt]
	if !ok {
		bad("content type %q is not described", contentType)
		return errs
	}
	for _, err := range checkJSON(m.Schema, body) {
		bad("body: %v", err)
	}
	return errs
}

// response finds the described response for a status: exact, then the
// class (2XX), then default.
func (op *Operation) response(status int) (map[string]media, bool) {
	for _, k := range []string{strconv.Itoa(status), fmt.Sprintf("%dXX", status/100), "default"} {
		if c, ok := op.responses[k]; ok {
			return c, true
		}
	}
	return nil, false
}

// Example returns a fresh copy of the described JSON example of a
// response, or nil.
func (op *Operation) Example(status int) any {
	c, ok := op.response(status)
	if !ok {
		return nil
	}
	return c["application/json"].example()
}

// RequestExample returns a fresh copy of the described JSON request body
// example, or nil.
func (op *Operation) RequestExample() any {
	if op.body == nil {
		return nil
	}
	return op.body.Content["application/json"].example()
}

// example returns a fresh copy of the media's JSON example (example, else
// the one of examples named default), or nil: callers may change it.
func (m media) example() any {
	v := m.Example
	if v == nil {
		if e, ok := m.Examples["default"]; ok {
			v = e.Value
		}
	}
	if v == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	var out any
	_ = decode(b, &out)
	return out
}

// ResponseSchema is the JSON schema of a described response, or nil.
func (op *Operation) ResponseSchema(status int) map[string]any {
	c, ok := op.response(status)
	if !ok {
		return nil
	}
	return c["application/json"].Schema
}

func checkJSON(schema map[string]any, body []byte) []error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return []error{fmt.Errorf("not JSON: %w", err)}
	}
	if dec.More() {
		return []error{fmt.Errorf("data after the JSON value")}
	}
	return Validate(schema, v)
}

// checkParam checks a path or query parameter's text against its schema.
func checkParam(schema map[string]any, raw string) error {
	var v any = raw
	switch schema["type"] {
	case "integer", "number":
		v = json.Number(raw)
		if _, err := strconv.ParseFloat(raw, 64); err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
	case "boolean":
		b, err := strconv.ParseBool(raw)
		if err != nil || (raw != "true" && raw != "false") {
			return fmt.Errorf("%q is not true or false", raw)
		}
		v = b
	}
	if errs := Validate(schema, v); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// ReadBody reads and restores a request's body.
func ReadBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(r.Body)
	r.Body.Close()
	r.Body = nopCloser{bytes.NewReader(buf.Bytes())}
	return buf.Bytes(), err
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
