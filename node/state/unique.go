package state

import (
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// A unique key is a value no two objects may hold at once, such as a
// Service's cluster IP or node port. The FSM enforces it: a create or update
// that would give an object a key another object holds fails with CodeTaken
// on every replica alike, and a deleted object frees its keys, whoever deletes
// it. Keys are "<field>=<value>", e.g. "spec.clusterIPs=10.43.0.7".
//
// The index is derived from the objects, so it needs no place in snapshots:
// Restore rebuilds it.

// ServiceIPKey is the unique key of a Service's cluster IP.
func ServiceIPKey(ip string) string { return "spec.clusterIPs=" + ip }

// NodePortKey is the unique key of a node port (any protocol).
func NodePortKey(port int32) string { return "spec.ports.nodePort=" + strconv.Itoa(int(port)) }

// serviceUniqueKeys lists the cluster IPs and node ports a Service holds.
func serviceUniqueKeys(o Object) []string {
	svc, ok := o.(*corev1.Service)
	if !ok {
		return nil
	}
	var keys []string
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if ip != "" && ip != corev1.ClusterIPNone {
			keys = append(keys, ServiceIPKey(ip))
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			k := NodePortKey(p.NodePort)
			if !slices.Contains(keys, k) { // one service may use a node port for TCP and UDP
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// uniqueOwner names an object in the unique index: "resource/ns/name".
func uniqueOwner(resource, key string) string { return resource + "/" + key }

// UniqueOwner reports which object holds a unique key ("services/ns/name").
func (s *Store) UniqueOwner(key string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.unique[key]
	return o, ok
}

// checkUnique reports the first key of obj held by an object other than
// owner, or "".
func (s *Store) checkUnique(k *Kind, owner string, obj Object) (key, holder string) {
	if k.Unique == nil {
		return "", ""
	}
	for _, key := range k.Unique(obj) {
		if h, ok := s.unique[key]; ok && h != owner {
			return key, h
		}
	}
	return "", ""
}

// rebuildUniqueLocked recomputes the index from the objects.
func (s *Store) rebuildUniqueLocked() {
	s.unique = map[string]string{}
	for _, k := range Kinds {
		if k.Unique == nil {
			continue
		}
		for key, o := range s.objs[k.Key()] {
			for _, u := range k.Unique(o) {
				s.unique[u] = uniqueOwner(k.Key(), key)
			}
		}
	}
}
