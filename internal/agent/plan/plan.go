// Package plan decides, without any I/O, what the agent does with the union
// of its desired resources and what it owns: which resource of which
// deployment applies each device-level thing, which ones lose a conflict, and
// which owned things are no longer desired and must be removed.
//
// The conflict rule (docs/adr/0003-resource-conflicts.md): two resources
// claim the same thing when they have the same kind and claim (a file path,
// a unit name, a container name). The current owner keeps it while it still
// claims it; otherwise the claimant whose (deployment, resource id) sorts
// first wins. Every other claimant reports Conflict naming the winner.
package plan

import (
	"sort"
)

// Resource is one desired resource of one deployment.
type Resource struct {
	Deployment string
	ID         string
	Kind       string
	// Claim is the device-level name the resource manages; empty when the
	// resource claims nothing exclusive (it then never conflicts).
	Claim string
}

// Key identifies the thing on the device.
func (r Resource) Key() string { return r.Kind + "/" + r.Claim }

// Owned is what the ledger says the agent created.
type Owned struct {
	Kind, Claim, Deployment, ResourceID string
}

// Key identifies the thing on the device.
func (o Owned) Key() string { return o.Kind + "/" + o.Claim }

// Conflict is a resource that lost its claim.
type Conflict struct {
	Resource Resource
	Winner   Resource
}

// Plan is the outcome.
type Plan struct {
	// Apply holds the winning resources, sorted by deployment then id.
	Apply []Resource
	// Conflicts holds the losers.
	Conflicts []Conflict
	// Remove holds owned things that no desired resource claims any more.
	Remove []Owned
}

// Make computes the plan.
func Make(desired []Resource, owned []Owned) Plan {
	owners := map[string]Owned{}
	for _, o := range owned {
		owners[o.Key()] = o
	}
	byKey := map[string][]Resource{}
	var p Plan
	for _, r := range desired {
		if r.Claim == "" {
			p.Apply = append(p.Apply, r)
			continue
		}
		byKey[r.Key()] = append(byKey[r.Key()], r)
	}
	for key, rs := range byKey {
		sort.Slice(rs, func(i, j int) bool { return less(rs[i], rs[j]) })
		winner := rs[0]
		if o, ok := owners[key]; ok {
			for _, r := range rs {
				if r.Deployment == o.Deployment && r.ID == o.ResourceID {
					winner = r
					break
				}
			}
		}
		p.Apply = append(p.Apply, winner)
		for _, r := range rs {
			if r != winner {
				p.Conflicts = append(p.Conflicts, Conflict{Resource: r, Winner: winner})
			}
		}
	}
	for _, o := range owned {
		if _, claimed := byKey[o.Key()]; !claimed {
			p.Remove = append(p.Remove, o)
		}
	}
	sort.Slice(p.Apply, func(i, j int) bool { return less(p.Apply[i], p.Apply[j]) })
	sort.Slice(p.Conflicts, func(i, j int) bool { return less(p.Conflicts[i].Resource, p.Conflicts[j].Resource) })
	sort.Slice(p.Remove, func(i, j int) bool { return p.Remove[i].Key() < p.Remove[j].Key() })
	return p
}

func less(a, b Resource) bool {
	if a.Deployment != b.Deployment {
		return a.Deployment < b.Deployment
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	return a.Key() < b.Key()
}
