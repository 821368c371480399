// Package giteadouble is a stand-in for a Gitea 1.26 server in the unit
// tests of forge/gitea, because a real Gitea is too heavy for them (the
// end-to-end tests run the real one). It serves what the driver uses of
// Gitea, shaped and guarded as Gitea v1.26.0 does it:
//
//   - the Actions REST endpoints under /api/v1 at instance (admin), org
//     and repo scope: POST …/actions/runners/registration-token, GET
//     …/actions/runners and DELETE …/actions/runners/{id}
//     (structs.ActionRunnersResponse), GET …/actions/jobs?status=
//     (structs.ActionWorkflowJobsResponse); every call needs the API
//     token ("Authorization: token …"), else 401;
//   - the runner service (code.gitea.io/actions-proto-go, under
//     /api/actions): Register with the registration token, answering as
//     routers/api/actions/runner.Register does (plain errors, so a wrong
//     token is connect's "unknown" code, not "unauthenticated"; the
//     runner's ephemeral flag is the request's), and UpdateTask and
//     UpdateLog behind Gitea's runner interceptor (x-runner-uuid and
//     x-runner-token of a registered runner, else "unauthenticated";
//     a task only by the runner it was given to);
//   - signed workflow_job webhooks (Deliver), with the headers and
//     payload of services/webhook (X-Gitea-Delivery, X-Gitea-Event,
//     X-Hub-Signature-256, structs.WorkflowJobPayload).
//
// It is not kinder than Gitea: what Gitea refuses, it refuses.
package giteadouble
