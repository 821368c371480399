package config

import (
	"bufio"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
)

const referenceHeader = `# Configuration reference

<!-- Generated from config/config.go; do not edit. Regenerate with:
     go test ./config -run TestReferenceUpToDate -update -->

` + "`fireactions serve`" + ` and ` + "`fireactions validate`" + ` read one YAML file. Unknown
keys are errors, and so is every value the tables below rule out; all
problems are reported at once, one line each, as ` + "`FILE:LINE: FIELD: problem`" + `.
A key left out (or set to null) takes the default shown; "derived" means the
default is computed from other fields, as the description says. Durations are
Go durations such as ` + "`90s`" + `, ` + "`2m`" + ` or ` + "`1h30m`" + `. Secrets are never in this
file: each forge names a ` + "`token_file`" + ` or a ` + "`token_env`" + ` variable (or, for a GitHub
App, an ` + "`app_private_key_file`" + `), and webhook secrets and API tokens are files too,
each readable by its owner only (mode 600). Keys marked "github only" or
"gitlab only" are errors on pools or forges of another type. Complete
examples: [Gitea](../config/testdata/example.yaml),
[GitHub](../config/testdata/github.yaml) and
[GitLab](../config/testdata/gitlab.yaml). What to set up at GitHub for each
pool scope (App permissions, token scopes, the webhook):
[docs/github.md](github.md).
`

// WriteReference writes the Markdown reference of the configuration file,
// generated from the Config type: one table per mapping, giving each key's
// YAML type, default (from Defaults and PoolDefaults) and description (the
// field's doc tag). docs/config.md is its output.
func WriteReference(w io.Writer) error {
	var secs []section
	if err := collect(&secs, "Top level", "", reflect.ValueOf(Defaults()), ""); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(referenceHeader)
	for _, s := range secs {
		fmt.Fprintf(bw, "\n## %s\n\n", s.title)
		if s.doc != "" {
			fmt.Fprintf(bw, "%s\n\n", s.doc)
		}
		bw.WriteString("| Key | Type | Default | Description |\n|---|---|---|---|\n")
		for _, r := range s.rows {
			fmt.Fprintf(bw, "| `%s` | %s | %s | %s |\n", r.key, r.typ, cell(r.def), cell(r.doc))
		}
	}
	return bw.Flush()
}

// section is one mapping of the file and its keys.
type section struct {
	title, doc string
	rows       []row
}

type row struct{ key, typ, def, doc string }

// collect appends the section of the struct value def (holding the
// defaults) at path, then the sections of its nested mappings.
func collect(secs *[]section, title, doc string, def reflect.Value, path string) error {
	*secs = append(*secs, section{title: title, doc: doc})
	me := len(*secs) - 1
	t := def.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		key := yamlName(sf)
		if key == "" {
			continue
		}
		fdoc := sf.Tag.Get("doc")
		typ, err := yamlType(sf.Type)
		if err != nil {
			return fmt.Errorf("config: %s.%s: %w", t.Name(), sf.Name, err)
		}
		(*secs)[me].rows = append((*secs)[me].rows, row{key, typ, defaultText(def.Field(i), fdoc), fdoc})
		sub := join(path, key)
		switch {
		case sf.Type.Kind() == reflect.Struct && sf.Type != durationType:
			err = collect(secs, "`"+sub+"`", fdoc, def.Field(i), sub)
		case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct:
			err = collect(secs, "`"+sub+"[]`", fdoc, elemDefault(sf.Type.Elem()), sub+"[]")
		case sf.Type.Kind() == reflect.Pointer && sf.Type.Elem().Kind() == reflect.Struct:
			err = collect(secs, "`"+sub+"`", fdoc, elemDefault(sf.Type.Elem()), sub)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// elemDefault is what a list element or optional section starts from:
// PoolDefaults for pools, FleetDefaults for the fleet, nothing for the
// rest.
func elemDefault(t reflect.Type) reflect.Value {
	if t == reflect.TypeFor[Pool]() {
		return reflect.ValueOf(PoolDefaults())
	}
	if t == reflect.TypeFor[Fleet]() {
		return reflect.ValueOf(FleetDefaults())
	}
	return reflect.Zero(t)
}

// yamlType names a Go field type as a YAML type.
func yamlType(t reflect.Type) (string, error) {
	if t == durationType {
		return "duration", nil
	}
	switch t.Kind() {
	case reflect.String:
		return "string", nil
	case reflect.Int, reflect.Int64:
		return "integer", nil
	case reflect.Bool:
		return "boolean", nil
	case reflect.Pointer:
		return yamlType(t.Elem())
	case reflect.Struct:
		return "mapping", nil
	case reflect.Slice:
		e, err := yamlType(t.Elem())
		if err != nil {
			return "", err
		}
		return "list of " + e + "s", nil
	}
	return "", fmt.Errorf("no YAML type for %s", t)
}

// defaultText renders a default value: "—" for none, "derived" when the
// description says how it is computed, "" for mappings (their keys have
// the defaults).
func defaultText(v reflect.Value, doc string) string {
	if v.Kind() == reflect.Struct && v.Type() != durationType {
		return ""
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
		return ""
	}
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	derived := strings.Contains(doc, "Default:") || strings.Contains(doc, "Default per")
	switch {
	case v.Type() == durationType && v.Int() == 0 && derived:
		return "derived" // 0 stands for "derive it"
	case v.Type() == durationType:
		return "`" + shortDuration(time.Duration(v.Int())) + "`"
	case v.Kind() == reflect.Int && v.IsZero() && derived:
		return "derived" // 0 stands for "derive it"
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64 || v.Kind() == reflect.Bool:
		return fmt.Sprintf("`%v`", v.Interface())
	case !v.IsZero() && v.Kind() == reflect.String:
		return "`" + v.String() + "`"
	case v.Kind() == reflect.Slice && v.Len() > 0:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return "`[" + strings.Join(items, ", ") + "]`"
	case derived:
		return "derived"
	}
	return "—"
}

// shortDuration drops a duration's zero minutes and seconds: 2m, 3h, 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// cell escapes text for a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}
