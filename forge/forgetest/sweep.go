// Package forgetest holds checks every forge driver must pass, run by each
// driver's tests against that forge's double.
package forgetest

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// SweepHosts returns host ids each of which starts another's runner names
// followed by '-': what a prefix match confuses. A fresh slice each call:
// no caller changes what the next one checks.
func SweepHosts() []string { return []string{"a", "a-b", "a-b-c"} }

// SweepCase is one fresh driver on an empty double.
type SweepCase struct {
	Forge forge.Forge
	// Spec completes a RunnerSpec for the driver (labels, guest).
	Spec func(name string) forge.RunnerSpec
	// Left lists the names of the runners the double still holds.
	Left func() []string
}

// SweepsExactlyItsOwn checks, for each host of SweepHosts() in turn on a
// fresh case, that a sweep of that host (list its runners with Runners,
// remove each) lists and removes exactly its own runners, while every
// other host's runner and a runner not of this program stay at the forge.
func SweepsExactlyItsOwn(t *testing.T, fresh func(t *testing.T) SweepCase) {
	hosts := SweepHosts()
	for _, host := range hosts {
		t.Run("host="+host, func(t *testing.T) {
			ctx := context.Background()
			c := fresh(t)
			owners := map[string]forge.Owner{}
			names := map[string][]string{} // by host
			var all []string
			for _, h := range hosts {
				o, err := forge.NewOwner(h)
				if err != nil {
					t.Fatal(err)
				}
				owners[h] = o
				for range 2 {
					name := o.RunnerName(forge.NewVMID())
					if _, err := c.Forge.Register(ctx, c.Spec(name)); err != nil {
						t.Fatalf("register %s: %v", name, err)
					}
					names[h] = append(names[h], name)
					all = append(all, name)
				}
			}
			// Not a VM id after the prefix: someone's hand-made runner.
			foreign := owners[host].RunnerName("build-box")
			if _, err := c.Forge.Register(ctx, c.Spec(foreign)); err != nil {
				t.Fatalf("register %s: %v", foreign, err)
			}
			all = append(all, foreign)

			// Positive control: the old prefix of this host starts
			// runner names of another host (all but the longest id),
			// so a prefix match would have listed them.
			if host != hosts[len(hosts)-1] {
				prefix := owners[host].RunnerName("")
				caught := 0
				for h, ns := range names {
					if h != host && strings.HasPrefix(ns[0], prefix) {
						caught++
					}
				}
				if caught == 0 {
					t.Fatalf("control: prefix %q starts no other host's runner name", prefix)
				}
			}
			if got := slices.Sorted(slices.Values(c.Left())); !slices.Equal(got, slices.Sorted(slices.Values(all))) {
				t.Fatalf("control: the double holds %v, want every registered runner %v", got, all)
			}

			listed, err := c.Forge.Runners(ctx, owners[host])
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range listed {
				got = append(got, r.Name)
				if err := c.Forge.Remove(ctx, r.RunnerRef); err != nil {
					t.Fatalf("remove %s: %v", r.Name, err)
				}
			}
			if want := slices.Sorted(slices.Values(names[host])); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
				t.Errorf("host %s listed %v as its own, want exactly %v", host, got, want)
			}
			var want []string
			for _, n := range all {
				if !slices.Contains(names[host], n) {
					want = append(want, n)
				}
			}
			if left := slices.Sorted(slices.Values(c.Left())); !slices.Equal(left, slices.Sorted(slices.Values(want))) {
				t.Errorf("after host %s's sweep the forge holds %v, want %v", host, left, want)
			}
		})
	}
}
