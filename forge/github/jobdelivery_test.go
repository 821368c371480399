package github

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"

	gh "github.com/google/go-github/v93/github"
)

// A workflow_job delivery decoded into jobDelivery's few fields reads
// what go-github's whole event reads of them: action, job id, status,
// labels, created_at, runner name, repository and enterprise, for each of
// GitHub's example payloads and for one whose optional fields are null.
func TestJobDeliveryReadsWhatGoGitHubsEventReads(t *testing.T) {
	b, err := os.ReadFile("testdata/github-workflow_job.examples.json")
	if err != nil {
		t.Fatal(err)
	}
	var payloads []json.RawMessage
	if err := json.Unmarshal(b, &payloads); err != nil || len(payloads) == 0 {
		t.Fatalf("examples: %d, %v", len(payloads), err)
	}
	payloads = append(payloads, json.RawMessage(`{"action":"queued","enterprise":{"slug":"bigco"},
		"workflow_job":{"id":7,"status":"queued","labels":null,"created_at":null,"runner_name":null},
		"repository":{"full_name":"acme/widgets"}}`))
	for i, p := range payloads {
		var full struct {
			gh.WorkflowJobEvent
			Enterprise struct {
				Slug string `json:"slug"`
			} `json:"enterprise"`
		}
		var narrow jobDelivery
		if err := json.Unmarshal(p, &full); err != nil {
			t.Fatalf("payload %d, go-github: %v", i, err)
		}
		if err := json.Unmarshal(p, &narrow); err != nil || narrow.WorkflowJob == nil || narrow.Repo == nil {
			t.Fatalf("payload %d, jobDelivery: %+v, %v", i, narrow, err)
		}
		j := full.WorkflowJob
		want := fmt.Sprint(full.GetAction(), j.GetID(), j.GetStatus(), j.Labels, j.GetCreatedAt().Time, j.GetRunnerName(),
			full.Repo.GetFullName(), full.Enterprise.Slug)
		var created gh.Timestamp
		if narrow.WorkflowJob.CreatedAt != nil {
			created = *narrow.WorkflowJob.CreatedAt
		}
		n := narrow.WorkflowJob
		got := fmt.Sprint(narrow.Action, n.ID, n.Status, n.Labels, created.Time, n.RunnerName, narrow.Repo.FullName, narrow.Enterprise.Slug)
		if got != want {
			t.Errorf("payload %d: jobDelivery reads %s; go-github %s", i, got, want)
		}
	}
}

// BenchmarkWorkflowJobDecode: one workflow_job delivery (GitHub's
// example, 8 KB) decoded into go-github's whole event, as before, and
// into jobDelivery.
// Run: go test -run '^$' -bench WorkflowJobDecode ./forge/github
func BenchmarkWorkflowJobDecode(b *testing.B) {
	raw, err := os.ReadFile("testdata/github-workflow_job.examples.json")
	if err != nil {
		b.Fatal(err)
	}
	var payloads []json.RawMessage
	if err := json.Unmarshal(raw, &payloads); err != nil {
		b.Fatal(err)
	}
	p := payloads[len(payloads)-1]
	b.Run("go-github event", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		for range b.N {
			var ev struct {
				gh.WorkflowJobEvent
				Enterprise struct {
					Slug string `json:"slug"`
				} `json:"enterprise"`
			}
			if err := json.Unmarshal(p, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jobDelivery", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		for range b.N {
			var ev jobDelivery
			if err := json.Unmarshal(p, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
