package plan

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
)

func file(dep, id, path string) Resource {
	return Resource{Deployment: dep, ID: id, Kind: "File", Claim: path}
}

func TestNoConflict(t *testing.T) {
	p := Make([]Resource{file("web", "a", "/srv/a"), file("db", "b", "/srv/b")}, nil)
	if len(p.Apply) != 2 || len(p.Conflicts) != 0 || len(p.Remove) != 0 {
		t.Fatalf("plan %+v", p)
	}
}

func TestConflictSmallestWinsWithoutOwner(t *testing.T) {
	p := Make([]Resource{file("zeta", "a", "/srv/x"), file("alpha", "b", "/srv/x")}, nil)
	if len(p.Apply) != 1 || p.Apply[0].Deployment != "alpha" {
		t.Fatalf("apply %+v, want alpha's", p.Apply)
	}
	if len(p.Conflicts) != 1 || p.Conflicts[0].Resource.Deployment != "zeta" || p.Conflicts[0].Winner.Deployment != "alpha" {
		t.Fatalf("conflicts %+v", p.Conflicts)
	}
}

func TestOwnerKeepsIt(t *testing.T) {
	owned := []Owned{{Kind: "File", Claim: "/srv/x", Deployment: "zeta", ResourceID: "a"}}
	p := Make([]Resource{file("zeta", "a", "/srv/x"), file("alpha", "b", "/srv/x")}, owned)
	if p.Apply[0].Deployment != "zeta" || p.Conflicts[0].Resource.Deployment != "alpha" {
		t.Fatalf("the owner must keep what it owns: %+v", p)
	}
	if len(p.Remove) != 0 {
		t.Fatalf("nothing to remove: %+v", p.Remove)
	}
}

func TestOwnershipMovesWhenOwnerLetsGo(t *testing.T) {
	owned := []Owned{{Kind: "File", Claim: "/srv/x", Deployment: "zeta", ResourceID: "a"}}
	p := Make([]Resource{file("alpha", "b", "/srv/x")}, owned)
	if len(p.Apply) != 1 || p.Apply[0].Deployment != "alpha" || len(p.Remove) != 0 {
		t.Fatalf("plan %+v: alpha takes it over, nothing removed", p)
	}
}

func TestRemoveUnclaimed(t *testing.T) {
	owned := []Owned{
		{Kind: "File", Claim: "/srv/x", Deployment: "web", ResourceID: "a"},
		{Kind: "Container", Claim: "web", Deployment: "web", ResourceID: "c"},
	}
	p := Make([]Resource{file("web", "a", "/srv/x")}, owned)
	if !reflect.DeepEqual(p.Remove, []Owned{owned[1]}) {
		t.Fatalf("remove %+v, want the container", p.Remove)
	}
}

func TestSameKindDifferentClaimsDoNotConflict(t *testing.T) {
	p := Make([]Resource{
		{Deployment: "a", ID: "x", Kind: "File", Claim: "web"},
		{Deployment: "b", ID: "y", Kind: "Container", Claim: "web"},
	}, nil)
	if len(p.Conflicts) != 0 {
		t.Fatalf("a file and a container of the same name do not conflict: %+v", p.Conflicts)
	}
}

// Randomized: the plan never depends on input order, every claimed thing is
// applied exactly once, and every resource is either applied or in conflict.
func TestPlanProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for trial := 0; trial < 2000; trial++ {
		var desired []Resource
		for i := 0; i < rng.Intn(8); i++ {
			desired = append(desired, file(fmt.Sprintf("d%d", rng.Intn(3)), fmt.Sprintf("r%d", i), fmt.Sprintf("/srv/%d", rng.Intn(4))))
		}
		var owned []Owned
		for i := 0; i < rng.Intn(4); i++ {
			owned = append(owned, Owned{Kind: "File", Claim: fmt.Sprintf("/srv/%d", rng.Intn(6)), Deployment: fmt.Sprintf("d%d", rng.Intn(3)), ResourceID: fmt.Sprintf("r%d", rng.Intn(8))})
		}
		p := Make(desired, dedupe(owned))
		shuffled := append([]Resource(nil), desired...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if q := Make(shuffled, dedupe(owned)); !reflect.DeepEqual(p, q) {
			t.Fatalf("plan depends on order:\n%+v\n%+v", p, q)
		}
		seen := map[string]int{}
		for _, r := range p.Apply {
			seen[r.Key()]++
		}
		for k, n := range seen {
			if n != 1 {
				t.Fatalf("%s applied %d times", k, n)
			}
		}
		if len(p.Apply)+len(p.Conflicts) != len(desired) {
			t.Fatalf("%d desired, %d applied + %d conflicts", len(desired), len(p.Apply), len(p.Conflicts))
		}
		for _, o := range p.Remove {
			if seen[o.Key()] > 0 {
				t.Fatalf("removing %s, which is applied", o.Key())
			}
		}
	}
}

func dedupe(os []Owned) []Owned {
	m := map[string]Owned{}
	var out []Owned
	for _, o := range os {
		if _, ok := m[o.Key()]; !ok {
			m[o.Key()] = o
			out = append(out, o)
		}
	}
	return out
}
