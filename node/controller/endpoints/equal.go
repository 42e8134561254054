package endpoints

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// Field-by-field equality of what this controller writes, semantic as
// equality.Semantic (nil and empty lists are equal) but without its
// reflection: every settled sync compares every endpoint, and reflection
// was most of a sync's cost. Fields this controller never sets fall back
// to equality.Semantic when present.

func subsetsEqual(a, b []corev1.EndpointSubset) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if !addressesEqual(x.Addresses, y.Addresses) || !addressesEqual(x.NotReadyAddresses, y.NotReadyAddresses) ||
			len(x.Ports) != len(y.Ports) {
			return false
		}
		for j := range x.Ports {
			p, q := &x.Ports[j], &y.Ports[j]
			if p.Name != q.Name || p.Port != q.Port || p.Protocol != q.Protocol || !stringPtrEqual(p.AppProtocol, q.AppProtocol) {
				return false
			}
		}
	}
	return true
}

func addressesEqual(a, b []corev1.EndpointAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.IP != y.IP || x.Hostname != y.Hostname || !stringPtrEqual(x.NodeName, y.NodeName) || !objectRefEqual(x.TargetRef, y.TargetRef) {
			return false
		}
	}
	return true
}

func endpointEqual(a, b *discoveryv1.Endpoint) bool {
	if len(a.Addresses) != len(b.Addresses) {
		return false
	}
	for i := range a.Addresses {
		if a.Addresses[i] != b.Addresses[i] {
			return false
		}
	}
	ca, cb := &a.Conditions, &b.Conditions
	if !boolPtrEqual(ca.Ready, cb.Ready) || !boolPtrEqual(ca.Serving, cb.Serving) || !boolPtrEqual(ca.Terminating, cb.Terminating) ||
		!stringPtrEqual(a.Hostname, b.Hostname) || !stringPtrEqual(a.NodeName, b.NodeName) || !stringPtrEqual(a.Zone, b.Zone) ||
		!objectRefEqual(a.TargetRef, b.TargetRef) {
		return false
	}
	if a.Hints != nil || b.Hints != nil || len(a.DeprecatedTopology) > 0 || len(b.DeprecatedTopology) > 0 {
		return equality.Semantic.DeepEqual(a.Hints, b.Hints) && equality.Semantic.DeepEqual(a.DeprecatedTopology, b.DeprecatedTopology)
	}
	return true
}

func objectRefEqual(a, b *corev1.ObjectReference) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func stringPtrEqual(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func boolPtrEqual(a, b *bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
