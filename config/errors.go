package config

import (
	"fmt"
	"strconv"
	"strings"
)

// FieldError is one problem in a configuration file: where it is and which
// field it concerns. Parse and Load report every problem they find as
// FieldErrors joined with errors.Join, so the message has one line per
// problem and errors.As finds the first of them.
type FieldError struct {
	// File is the file name given to Parse or Load.
	File string
	// Line is the 1-based line of the field, or of the closest enclosing
	// mapping when the file does not set the field; 0 when unknown.
	Line int
	// Field is the field's path, such as `pools[1] ("small").max`; empty
	// for problems with the file as a whole.
	Field string
	// Err is the problem itself; it may wrap a file system error.
	Err error
}

// Error renders the problem as one line: FILE[:LINE]: [FIELD: ]PROBLEM.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	// One problem, one line, whatever the wrapped error says.
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(b.String())
}

// Unwrap returns the underlying problem.
func (e *FieldError) Unwrap() error { return e.Err }

// field is a path into the configuration. key is the canonical path
// (pools[1].max) positions are recorded under; label is what messages show,
// with the names of forges and pools (pools[1] ("small").max).
type field struct{ key, label string }

// child is the field's mapping key name.
func (f field) child(name string) field {
	if f.key == "" {
		return field{name, name}
	}
	return field{f.key + "." + name, f.label + "." + name}
}

// index is the field's list element i.
func (f field) index(i int) field {
	s := "[" + strconv.Itoa(i) + "]"
	return field{f.key + s, f.label + s}
}

// named adds a list element's name to the label.
func (f field) named(name string) field {
	if name == "" {
		return f
	}
	return field{f.key, fmt.Sprintf("%s (%q)", f.label, name)}
}

// positions maps canonical field paths to the lines their values are on.
type positions map[string]int

// line is the line of key or, when the file does not set it, of the
// closest enclosing field the file sets; 0 when there is none.
func (p positions) line(key string) int {
	for key != "" {
		if l, ok := p[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}
