package endpoints

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/controller"
)

// selectsPods reports whether this controller keeps endpoints for svc:
// it has a selector and is not an ExternalName service. Services without
// one get user-managed endpoints. An empty selector counts as none (the
// store does not tell `selector: {}` from no selector).
func selectsPods(svc *corev1.Service) bool {
	return svc.Spec.Type != corev1.ServiceTypeExternalName && len(svc.Spec.Selector) > 0
}

// isHeadless reports whether svc has no cluster IP.
func isHeadless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.ClusterIP == ""
}

// podIncluded reports whether pod belongs in a service's endpoints at all
// (Kubernetes' ShouldPodBeInEndpoints): not finished, has an IP, and —
// unless includeTerminating — not being deleted.
func podIncluded(pod *corev1.Pod, includeTerminating bool) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	if pod.Status.PodIP == "" && len(pod.Status.PodIPs) == 0 {
		return false
	}
	return includeTerminating || pod.DeletionTimestamp == nil
}

// podIPsOf returns pod's IPs (status.podIPs, else status.podIP), parsed
// and normalised; unparsable ones are skipped.
func podIPsOf(pod *corev1.Pod) []netip.Addr {
	raw := make([]string, 0, 2)
	for _, ip := range pod.Status.PodIPs {
		raw = append(raw, ip.IP)
	}
	if len(raw) == 0 && pod.Status.PodIP != "" {
		raw = append(raw, pod.Status.PodIP)
	}
	out := make([]netip.Addr, 0, len(raw))
	for _, s := range raw {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// podIPOfFamily returns pod's first IP of the family (IPv6 when v6), or "".
func podIPOfFamily(pod *corev1.Pod, v6 bool) string {
	for _, a := range podIPsOf(pod) {
		if a.Is6() == v6 {
			return a.String()
		}
	}
	return ""
}

// protocolOr returns p, TCP when unset (the API's default).
func protocolOr(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// findPort resolves a service port's targetPort on pod (Kubernetes'
// FindPort): a number is used as is (unset: the service port); a name is
// looked up among the named ports of the pod's containers and sidecars
// (restartable init containers) with the service port's protocol. ok is
// false when the pod has no such named port.
func findPort(pod *corev1.Pod, sp *corev1.ServicePort) (port int32, ok bool) {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.Int && tp.IntVal != 0:
		return tp.IntVal, true
	case tp.Type == intstr.Int, tp.StrVal == "":
		return sp.Port, true
	}
	proto := protocolOr(sp.Protocol)
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == tp.StrVal && protocolOr(p.Protocol) == proto {
				return p.ContainerPort, true
			}
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == tp.StrVal && protocolOr(p.Protocol) == proto {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// shouldSetHostname reports whether pod's endpoints carry its hostname:
// it has one and its subdomain is the service's name (Kubernetes' rule for
// the per-pod DNS names of headless services).
func shouldSetHostname(pod *corev1.Pod, svc *corev1.Service) bool {
	return pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name && pod.Namespace == svc.Namespace
}

// podChanged reports whether a pod update can change any service's
// endpoints: kubelets rewrite pod status often (container states, restart
// counts), and most of those writes do not matter here.
func podChanged(a, b *corev1.Pod) bool {
	if a.UID != b.UID || !equalMaps(a.Labels, b.Labels) ||
		a.Status.PodIP != b.Status.PodIP || !equality.Semantic.DeepEqual(a.Status.PodIPs, b.Status.PodIPs) ||
		controller.IsPodReady(a) != controller.IsPodReady(b) ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		a.Status.Phase != b.Status.Phase ||
		a.Spec.NodeName != b.Spec.NodeName || a.Spec.Hostname != b.Spec.Hostname || a.Spec.Subdomain != b.Spec.Subdomain {
		return true
	}
	return !samePorts(a.Spec.Containers, b.Spec.Containers) || !samePorts(a.Spec.InitContainers, b.Spec.InitContainers)
}

// samePorts reports whether two container lists declare the same ports
// (and, for init containers, the same sidecar-ness).
func samePorts(a, b []corev1.Container) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !equality.Semantic.DeepEqual(a[i].Ports, b[i].Ports) || !equality.Semantic.DeepEqual(a[i].RestartPolicy, b[i].RestartPolicy) {
			return false
		}
	}
	return true
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
