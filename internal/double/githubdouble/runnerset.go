package githubdouble

// runnerSet is the double's self-hosted runners, by id, with indexes by
// name within a scope and by credential: a JIT registration's name check
// and a runner's calls look one runner up instead of scanning them all
// (the double serves bursts of a thousand registrations). The indexes
// answer what the scans did: GitHub refuses a second runner of one name
// in a scope, so a (scope, name) has at most one runner; a runner's name,
// scope and secret never change.
type runnerSet struct {
	byID     map[int64]*runner
	byName   map[scopedName]*runner
	bySecret map[string]*runner
}

type scopedName struct {
	scope scopeKey
	name  string
}

func newRunnerSet() runnerSet {
	return runnerSet{byID: map[int64]*runner{}, byName: map[scopedName]*runner{}, bySecret: map[string]*runner{}}
}

// add adds r, whose name is free in its scope (the caller checked).
func (s runnerSet) add(r *runner) {
	s.byID[r.id] = r
	s.byName[scopedName{r.scope, r.name}] = r
	if r.secret != "" {
		s.bySecret[r.secret] = r
	}
}

// remove removes the runner of id, if there is one.
func (s runnerSet) remove(id int64) {
	r := s.byID[id]
	if r == nil {
		return
	}
	delete(s.byID, id)
	if s.byName[scopedName{r.scope, r.name}] == r {
		delete(s.byName, scopedName{r.scope, r.name})
	}
	if s.bySecret[r.secret] == r {
		delete(s.bySecret, r.secret)
	}
}

// named is scope's runner called name, nil when it has none.
func (s runnerSet) named(scope scopeKey, name string) *runner {
	return s.byName[scopedName{scope, name}]
}
