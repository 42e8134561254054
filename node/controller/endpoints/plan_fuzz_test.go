package endpoints

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// FuzzPlanSlices checks planSlices on random stored slices (endpoints
// scattered, duplicated, stale, over the limit, of two port sets, some
// owned by an older service) against random desired endpoints: once the
// plan is applied every desired endpoint is in exactly one slice, as
// desired, no slice is over the limit or empty (but one placeholder when
// there are no endpoints), and planning again changes nothing.
//
//	go test -run='^$' -fuzz=FuzzPlanSlices ./node/controller/endpoints/
func FuzzPlanSlices(f *testing.F) {
	f.Add(int64(1), uint8(3), uint8(40), uint8(10))
	f.Add(int64(2), uint8(0), uint8(0), uint8(5))
	f.Add(int64(3), uint8(5), uint8(0), uint8(3))
	f.Add(int64(4), uint8(0), uint8(250), uint8(100))
	f.Add(int64(5), uint8(9), uint8(17), uint8(1))
	f.Fuzz(func(t *testing.T, seed int64, nStored, nDesired, maxPer uint8) {
		max := int(maxPer%20) + 1
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		svc := newService("web")
		old := svc.DeepCopy()
		old.UID = "svc-web-old"
		types4 := []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4}
		keys := []string{"a", "b"} // two port sets
		ports := map[string][]discoveryv1.EndpointPort{}
		for i, k := range keys {
			name, port, proto := k, int32(8080+i), corev1.ProtocolTCP
			ports[k] = []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
		}
		mkEP := func(i int, ready bool) discoveryv1.Endpoint {
			serving, term := ready, false
			return discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.0.%d.%d", i/200, i%200)},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprintf("u%d", i))},
			}
		}
		// Desired: nDesired endpoints over the two port sets.
		desiredPS := map[string]string{}
		groupOf := map[string]*sliceGroup{}
		for i := range int(nDesired) {
			k := keys[rng.IntN(2)]
			g := groupOf[k]
			if g == nil {
				g = &sliceGroup{key: slicePortsKey(ports[k]), ports: ports[k]}
				groupOf[k] = g
			}
			ep := mkEP(i, rng.IntN(2) == 0)
			g.endpoints = append(g.endpoints, ep)
			desiredPS[endpointKey(&ep)] = g.key
		}
		var groups []*sliceGroup
		for _, k := range keys {
			if g := groupOf[k]; g != nil {
				groups = append(groups, g)
			}
		}
		sort.Slice(groups, func(i, j int) bool { return groups[i].key < groups[j].key })
		desired := map[discoveryv1.AddressType][]*sliceGroup{discoveryv1.AddressTypeIPv4: groups}
		// Stored: nStored slices of random endpoints (some not desired, some
		// twice, some with stale conditions), random port sets and owners.
		stored := map[string]*discoveryv1.EndpointSlice{}
		for s := range int(nStored % 12) {
			owner := svc
			if rng.IntN(6) == 0 {
				owner = old
			}
			sl := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%02d", s), Namespace: "default", ResourceVersion: "1", UID: types.UID(fmt.Sprintf("s%d", s)),
					Labels: sliceLabels(svc), OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(owner, serviceGVK)}},
				AddressType: discoveryv1.AddressTypeIPv4,
			}
			if rng.IntN(5) != 0 {
				sl.Ports = ports[keys[rng.IntN(2)]]
			}
			for range rng.IntN(2 * max) {
				sl.Endpoints = append(sl.Endpoints, mkEP(rng.IntN(int(nDesired)+5), rng.IntN(2) == 0))
			}
			stored[sl.Name] = sl
		}

		apply := func(plan slicePlan) {
			for _, s := range plan.deletes {
				if _, ok := stored[s.Name]; !ok {
					t.Fatalf("delete of %s, which is not stored", s.Name)
				}
				delete(stored, s.Name)
			}
			for _, s := range plan.updates {
				if _, ok := stored[s.Name]; !ok {
					t.Fatalf("update of %s, which is not stored (or deleted by the same plan)", s.Name)
				}
				stored[s.Name] = s
			}
			for i, s := range plan.creates {
				c := s.DeepCopy()
				c.Name, c.Namespace, c.ResourceVersion = fmt.Sprintf("new-%d-%d", len(stored), i), "default", "1"
				c.Labels = sliceLabels(svc)
				c.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(svc, serviceGVK)}
				stored[c.Name] = c
			}
		}
		list := func() []*discoveryv1.EndpointSlice {
			out := make([]*discoveryv1.EndpointSlice, 0, len(stored))
			for _, s := range stored {
				out = append(out, s)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			return out
		}

		apply(planSlices(svc, list(), types4, desired, max))

		seen := map[string]bool{}
		for _, s := range list() {
			if !ownedBy(s, svc) {
				t.Errorf("slice %s of the old service kept", s.Name)
			}
			if len(s.Endpoints) > max {
				t.Errorf("slice %s has %d endpoints (max %d)", s.Name, len(s.Endpoints), max)
			}
			if len(s.Endpoints) == 0 && (nDesired > 0 || len(stored) != 1 || len(s.Ports) != 0) {
				t.Errorf("empty slice %s (ports %d) among %d, %d endpoints desired", s.Name, len(s.Ports), len(stored), nDesired)
			}
			for i := range s.Endpoints {
				k := endpointKey(&s.Endpoints[i])
				if seen[k] {
					t.Errorf("endpoint %s twice", k)
				}
				seen[k] = true
				if desiredPS[k] != slicePortsKey(s.Ports) {
					t.Errorf("endpoint %s in a slice of ports %q, want %q", k, slicePortsKey(s.Ports), desiredPS[k])
				}
			}
		}
		for _, g := range groups {
			for i := range g.endpoints {
				ep := &g.endpoints[i]
				if !seen[endpointKey(ep)] {
					t.Errorf("endpoint %s missing", endpointKey(ep))
				}
			}
		}
		for _, s := range list() {
			for i := range s.Endpoints {
				k := endpointKey(&s.Endpoints[i])
				for _, g := range groups {
					for j := range g.endpoints {
						if endpointKey(&g.endpoints[j]) == k && !endpointEqual(&s.Endpoints[i], &g.endpoints[j]) {
							t.Errorf("endpoint %s stored stale", k)
						}
					}
				}
			}
		}
		if again := planSlices(svc, list(), types4, desired, max); len(again.creates)+len(again.updates)+len(again.deletes) != 0 {
			t.Errorf("a second plan changes things: %d creates, %d updates, %d deletes", len(again.creates), len(again.updates), len(again.deletes))
		}
	})
}
