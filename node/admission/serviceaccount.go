package admission

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
)

// Service-account admission, as kube-apiserver's ServiceAccount plugin
// does it.
const (
	// DefaultServiceAccount is the account of a pod that names none.
	DefaultServiceAccount = "default"
	// ServiceAccountMountPath is where a pod's containers find their
	// token, the cluster CA and their namespace.
	ServiceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// RootCAConfigMap holds the cluster CA certificate (key ca.crt) in every
	// namespace.
	RootCAConfigMap = "kube-root-ca.crt"
	// TokenExpirationSeconds is the lifetime of the token in the volume
	// (Kubernetes' 3607: an hour and a marker that it was defaulted).
	TokenExpirationSeconds = 3607
	// apiAccessVolumePrefix starts the name of the volume admission adds.
	apiAccessVolumePrefix = "kube-api-access-"
)

// PodServiceAccount gives a new pod its service account ("default" unless
// it names one), the account's imagePullSecrets when the pod names none,
// and, unless the pod or its account turns automounting off
// or a container already mounts something there, a projected volume
// kube-api-access-xxxxx with a token for that account, the cluster CA
// (ConfigMap kube-root-ca.crt) and the namespace, mounted read-only at
// ServiceAccountMountPath in every container. The token is minted by the
// node that runs the pod (it is bound to the pod and refreshed before it
// expires).
func PodServiceAccount(r Reader, pod *corev1.Pod) {
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = pod.Spec.DeprecatedServiceAccount
	}
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = DefaultServiceAccount
	}
	pod.Spec.DeprecatedServiceAccount = pod.Spec.ServiceAccountName
	if o, ok := r.Get("serviceaccounts", pod.Namespace, pod.Spec.ServiceAccountName); ok && len(pod.Spec.ImagePullSecrets) == 0 {
		pod.Spec.ImagePullSecrets = slices.Clone(o.(*corev1.ServiceAccount).ImagePullSecrets)
	}
	if !automount(r, pod) {
		return
	}
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil && strings.HasPrefix(v.Name, apiAccessVolumePrefix) {
			return // already admitted (e.g. a pod copied from another)
		}
	}
	name := apiAccessVolumePrefix + utilrand.String(5)
	exp := int64(TokenExpirationSeconds)
	mode := int32(0o644)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{DefaultMode: &mode, Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: &exp, Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: RootCAConfigMap},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace",
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		}},
	}})
	mount := corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: ServiceAccountMountPath}
	add := func(cs []corev1.Container) {
		for i := range cs {
			if !slices.ContainsFunc(cs[i].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == ServiceAccountMountPath }) {
				cs[i].VolumeMounts = append(cs[i].VolumeMounts, mount)
			}
		}
	}
	add(pod.Spec.InitContainers)
	add(pod.Spec.Containers)
}

// automount: the pod's own setting wins, then its account's; on by default.
func automount(r Reader, pod *corev1.Pod) bool {
	if a := pod.Spec.AutomountServiceAccountToken; a != nil {
		return *a
	}
	if o, ok := r.Get("serviceaccounts", pod.Namespace, pod.Spec.ServiceAccountName); ok {
		if a := o.(*corev1.ServiceAccount).AutomountServiceAccountToken; a != nil {
			return *a
		}
	}
	return true
}
