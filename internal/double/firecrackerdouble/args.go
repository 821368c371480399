package firecrackerdouble

import (
	"fmt"
	"strings"
)

// flagSpec is one command-line argument: whether it takes a value and
// whether it may repeat.
type flagSpec struct {
	value, multi bool
}

// parsedArgs are "--name value" arguments, and what follows "--".
type parsedArgs struct {
	values map[string][]string
	extra  []string
}

func (p parsedArgs) get(name, def string) string {
	if v := p.values[name]; len(v) > 0 {
		return v[0]
	}
	return def
}

func (p parsedArgs) has(name string) bool { _, ok := p.values[name]; return ok }

// parseArgs reads arguments the way Firecracker's and the jailer's parser
// do: every argument is --name, known, given once unless it may repeat,
// its value the next argument; "--" ends them (the rest is for the exec'd
// program, when rest is true).
func parseArgs(args []string, known map[string]flagSpec, rest bool) (parsedArgs, error) {
	p := parsedArgs{values: map[string][]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" && rest {
			p.extra = args[i+1:]
			return p, nil
		}
		name, ok := strings.CutPrefix(a, "--")
		if !ok || name == "" {
			return p, fmt.Errorf("found argument %q which wasn't expected", a)
		}
		spec, ok := known[name]
		if !ok {
			return p, fmt.Errorf("found argument %q which wasn't expected, or isn't valid in this context", a)
		}
		if _, dup := p.values[name]; dup && !spec.multi {
			return p, fmt.Errorf("the argument %q was provided more than once", a)
		}
		v := ""
		if spec.value {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return p, fmt.Errorf("the argument %q requires a value but none was supplied", a)
			}
			i++
			v = args[i]
		}
		p.values[name] = append(p.values[name], v)
	}
	return p, nil
}
