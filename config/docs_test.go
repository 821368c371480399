package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/config.md from the schema")

// referencePath is docs/config.md, from the package directory tests run in.
var referencePath = filepath.Join("..", "docs", "config.md")

// docs/config.md is exactly what WriteReference writes.
func TestReferenceUpToDate(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteReference(&buf); err != nil {
		t.Fatalf("WriteReference: %v", err)
	}
	if *update {
		if err := os.WriteFile(referencePath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	const fix = "run `go test ./config -run TestReferenceUpToDate -update`"
	have, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v; %s", err, fix)
	}
	if !bytes.Equal(have, buf.Bytes()) {
		t.Fatalf("docs/config.md is out of date; %s", fix)
	}
}

// The reference lists every key with its default, and every mapping as a
// section.
func TestReferenceContents(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteReference(&buf); err != nil {
		t.Fatal(err)
	}
	ref := buf.String()
	for _, want := range []string{
		"## `pools[].timeouts`",
		"| `state_dir` | string | `/var/lib/fireactions` |",
		"| `nat` | boolean | `true` |",
		"| `max` | integer | `1` |",
		"| `min_idle` | integer | `0` |",
		"| `boot` | duration | `2m` |",
		"| `labels` | list of strings | — |",
		"| `gateway` | string | derived |",
		"| `pools` | list of mappings |",
		"## `api`",
		"| `socket` | string | `/run/fireactions/api.sock` |",
		"| `drain_grace` | duration | `10m` |",
		"| `reconcile_interval` | duration | `2s` |",
		"| `keep` | duration | `24h` |",
		"| `listen` | string | `127.0.0.1:9464` |",
		"| `app_id` | integer | `0` |",
		"| `url` | string | derived |",
		"| `repos` | list of strings | — |",
		"| `gid` | integer | derived |",
		"| `locked` | boolean | derived |",
		"| `executor` | string | derived |",
		"| `maximum_timeout` | duration | `0s` |",
	} {
		if !strings.Contains(ref, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

// Every key of the schema has a description.
func TestEveryKeyDocumented(t *testing.T) {
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			sf := typ.Field(i)
			key := yamlName(sf)
			if key == "" {
				continue
			}
			if sf.Tag.Get("doc") == "" {
				t.Errorf("%s has no doc tag", join(path, key))
			}
			ft := sf.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(ft, join(path, key))
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}
