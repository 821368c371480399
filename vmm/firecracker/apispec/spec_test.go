package apispec

import (
	"os"
	"strings"
	"testing"
)

func loadSpec(t *testing.T) *Spec {
	t.Helper()
	data, err := os.ReadFile("../testdata/firecracker-api-1.17.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLoadFirecrackerSpec: the whole published description loads, with
// every keyword understood and every $ref resolved.
func TestLoadFirecrackerSpec(t *testing.T) {
	s := loadSpec(t)
	if s.Version != "1.17.0-dev" {
		t.Errorf("version %q", s.Version)
	}
	if len(s.Operations) < 30 {
		t.Errorf("%d operations, the description has 38", len(s.Operations))
	}
}

// TestPhasesAsTheSpecSaysThem: the pre-boot and post-boot markers of the
// description become the operations' phases.
func TestPhasesAsTheSpecSaysThem(t *testing.T) {
	s := loadSpec(t)
	for _, c := range []struct {
		method, path string
		want         Phase
	}{
		{"PUT", "/boot-source", PreBoot},
		{"PUT", "/machine-config", PreBoot},
		{"PATCH", "/machine-config", PreBoot},
		{"PUT", "/network-interfaces/{iface_id}", PreBoot},
		{"PUT", "/drives/{drive_id}", PreBoot},
		{"PUT", "/balloon", PreBoot}, // "This will fail after machine startup."
		{"PATCH", "/drives/{drive_id}", PostBoot},
		{"PATCH", "/network-interfaces/{iface_id}", PostBoot},
		{"PUT", "/snapshot/create", PostBoot},
		{"PUT", "/actions", Anytime},
		{"GET", "/", Anytime},
	} {
		op := s.Operation(c.method, c.path)
		if op == nil {
			t.Errorf("%s %s missing", c.method, c.path)
			continue
		}
		if op.Phase != c.want {
			t.Errorf("%s %s: %s, want %s", c.method, c.path, op.Phase, c.want)
		}
	}
}

func TestMatchPathTemplates(t *testing.T) {
	s := loadSpec(t)
	op, params, ok := s.Match("PUT", "/drives/rootfs")
	if !ok || op.Path != "/drives/{drive_id}" || params["drive_id"] != "rootfs" {
		t.Fatalf("PUT /drives/rootfs matched %v %v %v", op, params, ok)
	}
	for _, c := range []struct{ method, path string }{
		{"PUT", "/drives/"}, {"PUT", "/drives/a/b"}, {"DELETE", "/drives/a"}, {"PUT", "/no-such"}, {"POST", "/actions"},
	} {
		if _, _, ok := s.Match(c.method, c.path); ok {
			t.Errorf("%s %s matched an operation", c.method, c.path)
		}
	}
}

func TestValidateBody(t *testing.T) {
	s := loadSpec(t)
	boot := s.Operation("PUT", "/boot-source")
	machine := s.Operation("PUT", "/machine-config")
	limiter := s.Operation("PATCH", "/network-interfaces/{iface_id}")
	mmds := s.Operation("PUT", "/mmds")
	for _, c := range []struct {
		name string
		op   *Operation
		body string
		want string // "" = valid
	}{
		{"valid", boot, `{"kernel_image_path":"/k","boot_args":"console=ttyS0"}`, ""},
		{"unknown field", boot, `{"kernel_image_path":"/k","kernel_args":"x"}`, `unknown field "kernel_args"`},
		{"missing required", boot, `{"initrd_path":"/i"}`, `missing field "kernel_image_path"`},
		{"wrong type", machine, `{"vcpu_count":"2","mem_size_mib":512}`, `vcpu_count: invalid type: string "2", expected an integer`},
		{"float for integer", machine, `{"vcpu_count":2.0,"mem_size_mib":512}`, "expected an integer"},
		{"above maximum", machine, `{"vcpu_count":33,"mem_size_mib":512}`, "more than the maximum 32"},
		{"below minimum", machine, `{"vcpu_count":0,"mem_size_mib":512}`, "less than the minimum 1"},
		{"bad enum", machine, `{"vcpu_count":1,"mem_size_mib":512,"huge_pages":"1G"}`, `unknown variant "1G"`},
		{"duplicate key", machine, `{"vcpu_count":1,"vcpu_count":2,"mem_size_mib":512}`, `duplicate field "vcpu_count"`},
		{"nested through $ref", limiter, `{"iface_id":"eth0","rx_rate_limiter":{"bandwidth":{"size":-1,"refill_time":1}}}`, "rx_rate_limiter.bandwidth.size: -1 is less than the minimum 0"},
		{"null is not a string", boot, `{"kernel_image_path":null}`, "invalid type: null"},
		{"trailing data", boot, `{"kernel_image_path":"/k"} {}`, "trailing characters"},
		{"not an object", boot, `["/k"]`, "expected an object"},
		{"open object", mmds, `{"anything":{"goes":[1,2]}}`, ""},
		{"required body", boot, ``, "a body is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.ValidateBody(c.op, []byte(c.body))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("valid body refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("invalid body accepted, want %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestUnknownKeywordFailsLoad: a keyword the validator does not implement
// must not be silently ignored.
func TestUnknownKeywordFailsLoad(t *testing.T) {
	spec := `swagger: "2.0"
info: {version: "x"}
paths: {}
definitions:
  A:
    type: string
    pattern: "^a+$"
`
	if _, err := Load([]byte(spec)); err == nil || !strings.Contains(err.Error(), `"pattern"`) {
		t.Fatalf("Load = %v, want an unsupported keyword error", err)
	}
	dangling := `swagger: "2.0"
info: {version: "x"}
paths: {}
definitions:
  A:
    $ref: "#/definitions/B"
`
	if _, err := Load([]byte(dangling)); err == nil {
		t.Fatal("a dangling $ref loaded")
	}
}

// BenchmarkLoad is what the firecracker double spends reading the
// description at each start.
func BenchmarkLoad(b *testing.B) {
	data, err := os.ReadFile("../testdata/firecracker-api-1.17.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Load(data); err != nil {
			b.Fatal(err)
		}
	}
}
