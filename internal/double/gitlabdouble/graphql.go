package gitlabdouble

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/validator"
)

// graphQLSchema is the part of GitLab's GraphQL schema the double serves,
// with GitLab's names and types (doc/api/graphql/reference: Query.jobs,
// CiJobConnection, CiJob, Project, PageInfo, CiJobStatus). A query naming
// anything else fails validation as GitLab's would for an unknown field.
const graphQLSchema = `
schema { query: Query }
scalar Time
scalar JobID
enum CiJobStatus { CREATED WAITING_FOR_RESOURCE PREPARING WAITING_FOR_CALLBACK PENDING RUNNING FAILED SUCCESS CANCELED CANCELING SKIPPED MANUAL SCHEDULED }
enum CiRunnerType { INSTANCE_TYPE GROUP_TYPE PROJECT_TYPE }
type Query {
  jobs(statuses: [CiJobStatus!], runnerTypes: [CiRunnerType!], after: String, before: String, first: Int, last: Int): CiJobConnection
}
type CiJobConnection { count: Int! edges: [CiJobEdge] nodes: [CiJob] pageInfo: PageInfo! }
type CiJobEdge { cursor: String! node: CiJob }
type PageInfo { endCursor: String hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String }
type CiJob {
  id: JobID
  name: String
  status: CiJobStatus
  tags: [String!]
  refName: String
  createdAt: Time!
  queuedAt: Time
  startedAt: Time
  finishedAt: Time
  project: Project
}
type Project { id: ID! fullPath: ID! name: String! sharedRunnersEnabled: Boolean }
`

var schema = gqlparser.MustLoadSchema(&ast.Source{Name: "gitlab.graphql", Input: graphQLSchema})

// maxGraphQLPage is GitLab's max_page_size for connections.
const maxGraphQLPage = 100

// serveGraphQL is POST /api/graphql. It needs an access token with the
// api or read_api scope. Query.jobs lists every job of the instance for
// an administrator only: for anyone else GitLab's Ci::JobsFinder denies
// access and the resolver answers an empty connection, not an error.
func (s *Server) serveGraphQL(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls = append(s.calls, r.Method+" /api/graphql")
	s.mu.Unlock()
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}
	g, ok := s.grant(r)
	if !ok {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"errors": []map[string]string{{"message": "Invalid token"}}})
		return
	}
	if !g.can("api", "read_api") {
		insufficientScope(w)
		return
	}
	var req struct {
		Query         string         `json:"query"`
		OperationName string         `json:"operationName"`
		Variables     map[string]any `json:"variables"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Query == "" {
		graphQLErrors(w, "No query string was present")
		return
	}
	doc, errs := gqlparser.LoadQuery(schema, req.Query)
	if len(errs) > 0 {
		graphQLErrors(w, errs.Error())
		return
	}
	op := doc.Operations.ForName(req.OperationName)
	if op == nil || op.Operation != ast.Query {
		graphQLErrors(w, "no query operation")
		return
	}
	vars, err := validator.VariableValues(schema, op, req.Variables)
	if err != nil {
		graphQLErrors(w, err.Error())
		return
	}
	data := map[string]any{}
	for _, f := range fields(op.SelectionSet, doc) {
		switch f.Name {
		case "__typename":
			data[alias(f)] = "Query"
		case "jobs":
			conn, err := s.jobsConnection(f.ArgumentMap(vars), g.Admin)
			if err != nil {
				graphQLErrors(w, err.Error())
				return
			}
			data[alias(f)] = project(conn, f.SelectionSet, doc)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

func graphQLErrors(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusOK, map[string]any{"errors": []map[string]string{{"message": msg}}})
}

// jobsConnection resolves Query.jobs: the jobs with the statuses, newest
// first (Ci::JobsFinder orders by ID descending), paged by first/after.
func (s *Server) jobsConnection(args map[string]any, admin bool) (map[string]any, error) {
	var statuses []string
	if l, ok := args["statuses"].([]any); ok {
		for _, v := range l {
			statuses = append(statuses, strings.ToLower(fmt.Sprint(v)))
		}
	}
	first := maxGraphQLPage
	if n, ok := args["first"].(int64); ok {
		if n < 0 {
			return nil, fmt.Errorf("Argument 'first' on Field 'jobs' has an invalid value (%d). Expected type 'Int'", n)
		}
		first = min(int(n), maxGraphQLPage)
	}
	var after int64
	if c, ok := args["after"].(string); ok && c != "" {
		b, err := base64.StdEncoding.DecodeString(c)
		if err == nil {
			after, err = strconv.ParseInt(string(b), 10, 64)
		}
		if err != nil {
			return nil, fmt.Errorf("Please provide a valid cursor")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var nodes, edges []any
	var list []*Job
	if admin {
		ids := sortedKeys(s.jobs)
		slices.Reverse(ids)
		for _, id := range ids {
			j := s.jobs[id]
			if (after == 0 || id < after) && (statuses == nil || slices.Contains(statuses, j.Status)) {
				list = append(list, j)
			}
		}
	}
	count := len(list)
	more := len(list) > first
	list = list[:min(first, len(list))]
	cursor := func(j *Job) string { return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(j.ID, 10))) }
	for _, j := range list {
		n := s.jobNodeLocked(j)
		nodes = append(nodes, n)
		edges = append(edges, map[string]any{"cursor": cursor(j), "node": n})
	}
	page := map[string]any{"hasNextPage": more, "hasPreviousPage": after != 0, "startCursor": nil, "endCursor": nil}
	if len(list) > 0 {
		page["startCursor"], page["endCursor"] = cursor(list[0]), cursor(list[len(list)-1])
	}
	return map[string]any{"count": count, "nodes": nodes, "edges": edges, "pageInfo": page}, nil
}

// jobNodeLocked is a CiJob: IDs are global IDs, statuses upper case,
// times ISO 8601.
func (s *Server) jobNodeLocked(j *Job) map[string]any {
	ts := func(t time.Time) any { return timestamp(t, time.RFC3339) }
	p := s.projects[j.ProjectID]
	return map[string]any{
		"id": fmt.Sprintf("gid://gitlab/Ci::Build/%d", j.ID), "name": j.Name, "status": strings.ToUpper(j.Status),
		"tags": nonNil(j.Tags), "refName": j.Ref, "createdAt": ts(j.CreatedAt), "queuedAt": ts(j.CreatedAt),
		"startedAt": ts(j.StartedAt), "finishedAt": ts(j.EndedAt),
		"project": map[string]any{
			"id": fmt.Sprintf("gid://gitlab/Project/%d", p.ID), "fullPath": p.FullPath,
			"name":                 p.FullPath[strings.LastIndex(p.FullPath, "/")+1:],
			"sharedRunnersEnabled": !p.SharedRunnersOff,
		},
	}
}

// project keeps of v what the selection set asks for.
func project(v any, set ast.SelectionSet, doc *ast.QueryDocument) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for _, f := range fields(set, doc) {
			if f.Name == "__typename" {
				out[alias(f)] = f.ObjectDefinition.Name
				continue
			}
			out[alias(f)] = project(x[f.Name], f.SelectionSet, doc)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = project(e, set, doc)
		}
		return out
	}
	return v
}

// fields flattens a selection set's fragments into its fields.
func fields(set ast.SelectionSet, doc *ast.QueryDocument) []*ast.Field {
	var out []*ast.Field
	for _, sel := range set {
		switch x := sel.(type) {
		case *ast.Field:
			out = append(out, x)
		case *ast.InlineFragment:
			out = append(out, fields(x.SelectionSet, doc)...)
		case *ast.FragmentSpread:
			if d := doc.Fragments.ForName(x.Name); d != nil {
				out = append(out, fields(d.SelectionSet, doc)...)
			}
		}
	}
	return out
}

func alias(f *ast.Field) string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Name
}
