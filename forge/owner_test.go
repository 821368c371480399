package forge

import (
	"strings"
	"testing"
)

func mustOwner(t *testing.T, host string) Owner {
	t.Helper()
	o, err := NewOwner(host)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// Host ids where one is another's prefix followed by '-' (the bug of a
// prefix match), and ids made of hex digits, which a loose parse could
// take for part of a VM id.
var hostsThatNestedPrefixesWouldConfuse = []string{
	"a", "a-b", "a-b-c", "ci", "ci-2", "runner", "runner-b", "abc", "abc-def012345678", "a-", "a--b",
}

func TestEveryRunnerNameIsOwnedByExactlyItsOwnHost(t *testing.T) {
	vm := NewVMID()
	for _, maker := range hostsThatNestedPrefixesWouldConfuse {
		name := mustOwner(t, maker).RunnerName(vm)
		for _, other := range hostsThatNestedPrefixesWouldConfuse {
			if got, want := mustOwner(t, other).Owns(name), other == maker; got != want {
				t.Errorf("host %q owns %q (made by host %q): %v, want %v", other, name, maker, got, want)
			}
		}
	}
}

// The bug of issue 23, written out: host "a"'s old prefix "fa-a-" starts
// every runner name of host "a-b".
func TestAHostDoesNotOwnTheRunnersOfAHostItsIDIsAPrefixOf(t *testing.T) {
	short, long := mustOwner(t, "a"), mustOwner(t, "a-b")
	name := long.RunnerName("0123456789ab")
	if !strings.HasPrefix(name, short.RunnerName("")) {
		t.Fatalf("positive control: %q should start with host a's prefix %q", name, short.RunnerName(""))
	}
	if short.Owns(name) {
		t.Fatalf("host a owns %q, a runner of host a-b", name)
	}
	if !long.Owns(name) {
		t.Fatalf("host a-b does not own its own runner %q", name)
	}
}

func TestOwnsOnlyExactlyAVMIDAfterItsPrefix(t *testing.T) {
	o := mustOwner(t, "h")
	for name, want := range map[string]bool{
		"fa-h-0123456789ab":   true,
		"fa-h-0123456789abc":  false, // one digit too many
		"fa-h-0123456789a":    false, // one too few
		"fa-h-0123456789AB":   false, // upper case is not NewVMID's
		"fa-h-0123456789ag":   false, // not hex
		"fa-h-b-0123456789ab": false, // host h-b's
		"fa-h-":               false,
		"x-fa-h-0123456789ab": false,
		"fa-h-0123456789ab ":  false,
		"FA-h-0123456789ab":   false,
	} {
		if got := o.Owns(name); got != want {
			t.Errorf("Owns(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNewVMIDsAreOwnedWhenNamed(t *testing.T) {
	o := mustOwner(t, "h")
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := NewVMID()
		if !IsVMID(id) || !o.Owns(o.RunnerName(id)) {
			t.Fatalf("NewVMID() = %q: not a VM id its owner owns", id)
		}
		seen[id] = true
	}
	if len(seen) < 100 {
		t.Fatalf("100 NewVMID calls made %d distinct ids", len(seen))
	}
}

func TestZeroOwnerOwnsNothing(t *testing.T) {
	var o Owner
	if o.Owns("0123456789ab") || o.Owns("fa--0123456789ab") || o.Owns("") {
		t.Fatal("the zero Owner owns a name")
	}
}

func TestNewOwnerRefusesWhatIsNotAHostID(t *testing.T) {
	for _, bad := range []string{"", "-a", "A", "a_b", "a.b", "a/b", "abcdefghijklmnopqrstu"} {
		if _, err := NewOwner(bad); err == nil || !strings.Contains(err.Error(), "host_id") {
			t.Errorf("NewOwner(%q): %v, want an error naming host_id", bad, err)
		}
	}
}
