package apiserver

import (
	"fmt"
	"net/netip"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/state"
)

// maxDataSize bounds a ConfigMap's or Secret's data, as in Kubernetes.
const maxDataSize = 1 << 20

// cronJobNameMax leaves room for the suffix of the Jobs a CronJob creates.
const cronJobNameMax = 52

func fieldImmutable(parent, child string, v any) field.ErrorList {
	return field.ErrorList{field.Invalid(field.NewPath(parent, child), v, "field is immutable")}
}

// nameValidator is how a kind's names are checked.
func nameValidator(r *resource) apivalidation.ValidateNameFunc {
	switch r.Resource {
	case "namespaces":
		return apivalidation.NameIsDNSLabel
	case "services":
		return apivalidation.NameIsDNS1035Label
	case "roles", "clusterroles", "rolebindings", "clusterrolebindings":
		return validateRBACName
	}
	return apivalidation.NameIsDNSSubdomain
}

// validateObject checks obj (old is the stored version on update, nil on
// create) and returns every problem with its field path.
func validateObject(r *resource, obj, old state.Object) field.ErrorList {
	var errs field.ErrorList
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		if m, ok := a.GetObjectMeta().(*metav1.ObjectMeta); ok {
			errs = append(errs, apivalidation.ValidateObjectMeta(m, r.Namespaced, nameValidator(r), field.NewPath("metadata"))...)
		}
	}
	if old != nil && old.GetDeletionTimestamp() != nil {
		errs = append(errs, apivalidation.ValidateNoNewFinalizers(obj.GetFinalizers(), old.GetFinalizers(), field.NewPath("metadata", "finalizers"))...)
	}
	if rerrs, ok := validateRBAC(obj, old); ok {
		return append(errs, rerrs...)
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		errs = append(errs, validatePodSpec(&o.Spec, field.NewPath("spec"))...)
		if old != nil {
			errs = append(errs, validatePodUpdate(o, old.(*corev1.Pod))...)
		}
	case *corev1.Service:
		errs = append(errs, validateService(o)...)
	case *corev1.ConfigMap:
		errs = append(errs, validateData(o.Data, o.BinaryData)...)
		if old != nil {
			oc := old.(*corev1.ConfigMap)
			errs = append(errs, validateImmutableData(o.Immutable, oc.Immutable,
				equality.Semantic.DeepEqual(o.Data, oc.Data) && equality.Semantic.DeepEqual(o.BinaryData, oc.BinaryData))...)
		}
	case *corev1.Secret:
		errs = append(errs, validateSecret(o)...)
		if old != nil {
			os := old.(*corev1.Secret)
			if o.Type != os.Type {
				errs = append(errs, field.Invalid(field.NewPath("type"), o.Type, "field is immutable"))
			}
			errs = append(errs, validateImmutableData(o.Immutable, os.Immutable,
				equality.Semantic.DeepEqual(o.Data, os.Data))...)
		}
	case *corev1.Endpoints:
		errs = append(errs, validateEndpoints(o)...)
	case *appsv1.Deployment:
		errs = append(errs, validateWorkload("deployment", o.Spec.Replicas, o.Spec.Selector, &o.Spec.Template, true)...)
		errs = append(errs, validateDeploymentStrategy(&o.Spec.Strategy)...)
		if old != nil {
			errs = append(errs, selectorImmutable(o.Spec.Selector, old.(*appsv1.Deployment).Spec.Selector)...)
		}
	case *appsv1.ReplicaSet:
		errs = append(errs, validateWorkload("replicaset", o.Spec.Replicas, o.Spec.Selector, &o.Spec.Template, true)...)
		if old != nil {
			errs = append(errs, selectorImmutable(o.Spec.Selector, old.(*appsv1.ReplicaSet).Spec.Selector)...)
		}
	case *appsv1.StatefulSet:
		// The pods get a volume per claim template: mounts may name them.
		tmpl := o.Spec.Template.DeepCopy()
		have := map[string]bool{}
		for _, v := range tmpl.Spec.Volumes {
			have[v.Name] = true
		}
		for _, ct := range o.Spec.VolumeClaimTemplates {
			if !have[ct.Name] {
				tmpl.Spec.Volumes = append(tmpl.Spec.Volumes, corev1.Volume{Name: ct.Name, VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: ct.Name}}})
			}
		}
		errs = append(errs, validateWorkload("statefulset", o.Spec.Replicas, o.Spec.Selector, tmpl, true)...)
		switch o.Spec.PodManagementPolicy {
		case appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement:
		default:
			errs = append(errs, field.NotSupported(field.NewPath("spec", "podManagementPolicy"), o.Spec.PodManagementPolicy,
				[]appsv1.PodManagementPolicyType{appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement}))
		}
		if old != nil {
			errs = append(errs, selectorImmutable(o.Spec.Selector, old.(*appsv1.StatefulSet).Spec.Selector)...)
		}
	case *appsv1.DaemonSet:
		errs = append(errs, validateWorkload("daemonset", nil, o.Spec.Selector, &o.Spec.Template, true)...)
		if old != nil {
			errs = append(errs, selectorImmutable(o.Spec.Selector, old.(*appsv1.DaemonSet).Spec.Selector)...)
		}
	case *batchv1.Job:
		errs = append(errs, validateJobSpec(&o.Spec, field.NewPath("spec"))...)
		if old != nil {
			errs = append(errs, selectorImmutable(o.Spec.Selector, old.(*batchv1.Job).Spec.Selector)...)
		}
	case *batchv1.CronJob:
		if len(o.Name) > cronJobNameMax {
			errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), "", cronJobNameMax))
		}
		if o.Spec.Schedule == "" {
			errs = append(errs, field.Required(field.NewPath("spec", "schedule"), ""))
		}
		switch o.Spec.ConcurrencyPolicy {
		case batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent:
		default:
			errs = append(errs, field.NotSupported(field.NewPath("spec", "concurrencyPolicy"), o.Spec.ConcurrencyPolicy,
				[]batchv1.ConcurrencyPolicy{batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent}))
		}
		errs = append(errs, validateJobSpec(&o.Spec.JobTemplate.Spec, field.NewPath("spec", "jobTemplate", "spec"))...)
	case *schedulingv1.PriorityClass:
		errs = append(errs, validatePriorityClass(o)...)
		if old != nil {
			errs = append(errs, validatePriorityClassUpdate(o, old.(*schedulingv1.PriorityClass))...)
		}
	}
	return errs
}

var preemptionPolicies = []corev1.PreemptionPolicy{corev1.PreemptLowerPriority, corev1.PreemptNever}

func validatePreemptionPolicy(p *corev1.PreemptionPolicy, path *field.Path) field.ErrorList {
	if p == nil || contains(asStrings(preemptionPolicies), string(*p)) {
		return nil
	}
	return field.ErrorList{field.NotSupported(path, *p, preemptionPolicies)}
}

// validatePriorityClass checks a PriorityClass as Kubernetes does: names
// starting with "system-" belong to the built-in classes (with their
// values), other classes may not exceed HighestUserDefinablePriority, and
// the preemption policy is one of the two known. That at most one class
// is globalDefault needs the store: see Server.validate.
func validatePriorityClass(pc *schedulingv1.PriorityClass) field.ErrorList {
	var errs field.ErrorList
	if strings.HasPrefix(pc.Name, admission.SystemPriorityClassPrefix) {
		if err := admission.IsKnownSystemPriorityClass(pc.Name, pc.Value, pc.GlobalDefault); err != nil {
			errs = append(errs, field.Forbidden(field.NewPath("metadata", "name"),
				"priority class names with '"+admission.SystemPriorityClassPrefix+"' prefix are reserved for system use only. error: "+err.Error()))
		}
	} else if pc.Value > admission.HighestUserDefinablePriority {
		errs = append(errs, field.Forbidden(field.NewPath("value"),
			fmt.Sprintf("maximum allowed value of a user defined priority is %v", admission.HighestUserDefinablePriority)))
	}
	return append(errs, validatePreemptionPolicy(pc.PreemptionPolicy, field.NewPath("preemptionPolicy"))...)
}

// validatePriorityClassUpdate refuses changes of value and preemptionPolicy:
// pods were admitted with them.
func validatePriorityClassUpdate(pc, old *schedulingv1.PriorityClass) field.ErrorList {
	var errs field.ErrorList
	if pc.Value != old.Value {
		errs = append(errs, field.Forbidden(field.NewPath("value"), "may not be changed in an update."))
	}
	if !equality.Semantic.DeepEqual(pc.PreemptionPolicy, old.PreemptionPolicy) {
		var v any
		if pc.PreemptionPolicy != nil {
			v = *pc.PreemptionPolicy
		}
		errs = append(errs, field.Invalid(field.NewPath("preemptionPolicy"), v, "field is immutable"))
	}
	return errs
}

// validateData checks ConfigMap and Secret keys and total size.
func validateData[V string | []byte](data map[string]V, binary map[string][]byte) field.ErrorList {
	var errs field.ErrorList
	size := 0
	for k, v := range data {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, msg))
		}
		size += len(v)
	}
	for k, v := range binary {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, msg))
		}
		if _, dup := data[k]; dup {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, "duplicate of key present in data"))
		}
		size += len(v)
	}
	if size > maxDataSize {
		errs = append(errs, field.TooLong(field.NewPath("data"), "", maxDataSize))
	}
	return errs
}

func validateImmutableData(newImm, oldImm *bool, dataEqual bool) field.ErrorList {
	if oldImm == nil || !*oldImm {
		return nil
	}
	var errs field.ErrorList
	if newImm == nil || !*newImm {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
	}
	if !dataEqual {
		errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
	}
	return errs
}

func validateSecret(o *corev1.Secret) field.ErrorList {
	// stringData has been merged into data by setDefaults.
	errs := validateData(o.Data, nil)
	has := func(k string) bool {
		_, ok := o.Data[k]
		return ok
	}
	switch o.Type {
	case corev1.SecretTypeTLS:
		for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if !has(k) {
				errs = append(errs, field.Required(field.NewPath("data").Key(k), ""))
			}
		}
	case corev1.SecretTypeDockerConfigJson:
		if !has(corev1.DockerConfigJsonKey) {
			errs = append(errs, field.Required(field.NewPath("data").Key(corev1.DockerConfigJsonKey), ""))
		}
	case corev1.SecretTypeDockercfg:
		if !has(corev1.DockerConfigKey) {
			errs = append(errs, field.Required(field.NewPath("data").Key(corev1.DockerConfigKey), ""))
		}
	}
	return errs
}

var (
	protocols      = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
	restartValues  = []corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}
	dnsPolicies    = []corev1.DNSPolicy{corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone}
	pullPolicies   = []corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}
	serviceTypes   = []corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName}
	affinityValues = []corev1.ServiceAffinity{corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP}
)

func validProtocol(p corev1.Protocol) bool {
	return p == corev1.ProtocolTCP || p == corev1.ProtocolUDP || p == corev1.ProtocolSCTP
}

// validatePodSpec checks the essentials of a pod spec: containers, names,
// images, ports, volumes and policies.
func validatePodSpec(s *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), "must have at least one container"))
	}
	volumes := map[string]bool{}
	for i, v := range s.Volumes {
		p := path.Child("volumes").Index(i).Child("name")
		switch {
		case v.Name == "":
			errs = append(errs, field.Required(p, ""))
		case volumes[v.Name]:
			errs = append(errs, field.Duplicate(p, v.Name))
		default:
			for _, msg := range validation.IsDNS1123Label(v.Name) {
				errs = append(errs, field.Invalid(p, v.Name, msg))
			}
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	check := func(cs []corev1.Container, p *field.Path, init bool) {
		for i := range cs {
			errs = append(errs, validateContainer(&cs[i], p.Index(i), names, volumes)...)
			errs = append(errs, validateContainerProbes(&cs[i], p.Index(i), init)...)
		}
	}
	check(s.InitContainers, path.Child("initContainers"), true)
	check(s.Containers, path.Child("containers"), false)
	if !contains(asStrings(restartValues), string(s.RestartPolicy)) {
		errs = append(errs, field.NotSupported(path.Child("restartPolicy"), s.RestartPolicy, restartValues))
	}
	if !contains(asStrings(dnsPolicies), string(s.DNSPolicy)) {
		errs = append(errs, field.NotSupported(path.Child("dnsPolicy"), s.DNSPolicy, dnsPolicies))
	}
	if g := s.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		errs = append(errs, field.Invalid(path.Child("terminationGracePeriodSeconds"), *g, "must be greater than or equal to 0"))
	}
	if s.NodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(s.NodeName) {
			errs = append(errs, field.Invalid(path.Child("nodeName"), s.NodeName, msg))
		}
	}
	if s.PriorityClassName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(s.PriorityClassName) {
			errs = append(errs, field.Invalid(path.Child("priorityClassName"), s.PriorityClassName, msg))
		}
	}
	errs = append(errs, validatePreemptionPolicy(s.PreemptionPolicy, path.Child("preemptionPolicy"))...)
	return errs
}

func asStrings[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

func validateContainer(c *corev1.Container, p *field.Path, names, volumes map[string]bool) field.ErrorList {
	var errs field.ErrorList
	switch {
	case c.Name == "":
		errs = append(errs, field.Required(p.Child("name"), ""))
	case names[c.Name]:
		errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
	default:
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), c.Name, msg))
		}
	}
	names[c.Name] = true
	if c.Image == "" {
		errs = append(errs, field.Required(p.Child("image"), ""))
	}
	if c.ImagePullPolicy != "" && !contains(asStrings(pullPolicies), string(c.ImagePullPolicy)) {
		errs = append(errs, field.NotSupported(p.Child("imagePullPolicy"), c.ImagePullPolicy, pullPolicies))
	}
	portNames := map[string]bool{}
	for i, port := range c.Ports {
		pp := p.Child("ports").Index(i)
		for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
		}
		if port.HostPort != 0 {
			for _, msg := range validation.IsValidPortNum(int(port.HostPort)) {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), port.HostPort, msg))
			}
		}
		if !validProtocol(port.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, protocols))
		}
		if port.Name != "" {
			if portNames[port.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			portNames[port.Name] = true
			for _, msg := range validation.IsValidPortName(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
		}
	}
	for i, e := range c.Env {
		if e.Name == "" {
			errs = append(errs, field.Required(p.Child("env").Index(i).Child("name"), ""))
		}
	}
	for i, m := range c.VolumeMounts {
		mp := p.Child("volumeMounts").Index(i)
		if !volumes[m.Name] {
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		if m.MountPath == "" {
			errs = append(errs, field.Required(mp.Child("mountPath"), ""))
		}
	}
	return errs
}

// validatePodUpdate allows, as Kubernetes does, only a few pod spec fields to
// change: images, activeDeadlineSeconds, added tolerations, and nodeName
// while it is unset.
func validatePodUpdate(n, o *corev1.Pod) field.ErrorList {
	a, b := n.Spec.DeepCopy(), o.Spec.DeepCopy()
	for i := range a.Containers {
		if i < len(b.Containers) {
			a.Containers[i].Image = b.Containers[i].Image
		}
	}
	for i := range a.InitContainers {
		if i < len(b.InitContainers) {
			a.InitContainers[i].Image = b.InitContainers[i].Image
		}
	}
	a.ActiveDeadlineSeconds = b.ActiveDeadlineSeconds
	if len(a.Tolerations) >= len(b.Tolerations) && equality.Semantic.DeepEqual(a.Tolerations[:len(b.Tolerations)], b.Tolerations) {
		a.Tolerations = b.Tolerations
	}
	if b.NodeName == "" {
		a.NodeName = ""
	}
	if equality.Semantic.DeepEqual(a, b) {
		return nil
	}
	return field.ErrorList{field.Forbidden(field.NewPath("spec"),
		"pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or an unset `spec.nodeName`")}
}

func validateService(o *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	s := &o.Spec
	path := field.NewPath("spec")
	if !contains(asStrings(serviceTypes), string(s.Type)) {
		errs = append(errs, field.NotSupported(path.Child("type"), s.Type, serviceTypes))
	}
	if !contains(asStrings(affinityValues), string(s.SessionAffinity)) {
		errs = append(errs, field.NotSupported(path.Child("sessionAffinity"), s.SessionAffinity, affinityValues))
	}
	if s.Type == corev1.ServiceTypeExternalName {
		if s.ExternalName == "" {
			errs = append(errs, field.Required(path.Child("externalName"), ""))
		}
	} else if len(s.Ports) == 0 && s.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(path.Child("ports"), ""))
	}
	if s.ClusterIP != "" && s.ClusterIP != corev1.ClusterIPNone {
		if _, err := netip.ParseAddr(s.ClusterIP); err != nil {
			errs = append(errs, field.Invalid(path.Child("clusterIP"), s.ClusterIP, "must be a valid IP address or \"None\""))
		}
	}
	names := map[string]bool{}
	for i, p := range s.Ports {
		pp := path.Child("ports").Index(i)
		if len(s.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "must be specified when there is more than one port"))
		}
		if p.Name != "" {
			if names[p.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names[p.Name] = true
			for _, msg := range validation.IsDNS1123Label(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		if !validProtocol(p.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, protocols))
		}
		if p.TargetPort.Type == intstr.Int {
			for _, msg := range validation.IsValidPortNum(p.TargetPort.IntValue()) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.IntValue(), msg))
			}
		} else {
			for _, msg := range validation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		}
		if p.NodePort != 0 {
			for _, msg := range validation.IsValidPortNum(int(p.NodePort)) {
				errs = append(errs, field.Invalid(pp.Child("nodePort"), p.NodePort, msg))
			}
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(s.Selector, path.Child("selector"))...)
	return errs
}

func validateEndpoints(o *corev1.Endpoints) field.ErrorList {
	var errs field.ErrorList
	for i, ss := range o.Subsets {
		sp := field.NewPath("subsets").Index(i)
		for j, a := range append(append([]corev1.EndpointAddress(nil), ss.Addresses...), ss.NotReadyAddresses...) {
			if _, err := netip.ParseAddr(a.IP); err != nil {
				errs = append(errs, field.Invalid(sp.Child("addresses").Index(j).Child("ip"), a.IP, "must be a valid IP address"))
			}
		}
		for j, p := range ss.Ports {
			for _, msg := range validation.IsValidPortNum(int(p.Port)) {
				errs = append(errs, field.Invalid(sp.Child("ports").Index(j).Child("port"), p.Port, msg))
			}
			if !validProtocol(p.Protocol) {
				errs = append(errs, field.NotSupported(sp.Child("ports").Index(j).Child("protocol"), p.Protocol, protocols))
			}
		}
	}
	return errs
}

// validateWorkload checks a controller's replicas, selector and pod template.
func validateWorkload(kind string, replicas *int32, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, restartAlways bool) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if replicas != nil && *replicas < 0 {
		errs = append(errs, field.Invalid(spec.Child("replicas"), *replicas, "must be greater than or equal to 0"))
	}
	errs = append(errs, validateSelector(kind, sel, tmpl, spec, true)...)
	errs = append(errs, validateTemplate(tmpl, spec.Child("template"))...)
	if restartAlways && tmpl.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(spec.Child("template", "spec", "restartPolicy"), tmpl.Spec.RestartPolicy,
			[]corev1.RestartPolicy{corev1.RestartPolicyAlways}))
	}
	return errs
}

func validateSelector(kind string, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, spec *field.Path, required bool) field.ErrorList {
	var errs field.ErrorList
	if sel == nil {
		if required {
			errs = append(errs, field.Required(spec.Child("selector"), ""))
		}
		return errs
	}
	errs = append(errs, metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		errs = append(errs, field.Invalid(spec.Child("selector"), sel, "empty selector is invalid for "+kind))
		return errs
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return errs // reported above
	}
	if !s.Matches(labels.Set(tmpl.Labels)) {
		errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
	}
	return errs
}

func validateTemplate(tmpl *corev1.PodTemplateSpec, path *field.Path) field.ErrorList {
	errs := metavalidation.ValidateLabels(tmpl.Labels, path.Child("metadata", "labels"))
	errs = append(errs, apivalidation.ValidateAnnotations(tmpl.Annotations, path.Child("metadata", "annotations"))...)
	return append(errs, validatePodSpec(&tmpl.Spec, path.Child("spec"))...)
}

func validateDeploymentStrategy(s *appsv1.DeploymentStrategy) field.ErrorList {
	p := field.NewPath("spec", "strategy")
	switch s.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if s.RollingUpdate != nil {
			return field.ErrorList{field.Forbidden(p.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")}
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		var errs field.ErrorList
		ru := s.RollingUpdate
		for _, f := range []struct {
			name string
			v    *intstr.IntOrString
		}{{"maxUnavailable", ru.MaxUnavailable}, {"maxSurge", ru.MaxSurge}} {
			errs = append(errs, validateIntOrPercent(f.v, p.Child("rollingUpdate", f.name))...)
		}
		if isZero(ru.MaxUnavailable) && isZero(ru.MaxSurge) {
			errs = append(errs, field.Invalid(p.Child("rollingUpdate", "maxUnavailable"), ru.MaxUnavailable.String(), "may not be 0 when `maxSurge` is 0"))
		}
		return errs
	default:
		return field.ErrorList{field.NotSupported(p.Child("type"), s.Type,
			[]appsv1.DeploymentStrategyType{appsv1.RecreateDeploymentStrategyType, appsv1.RollingUpdateDeploymentStrategyType})}
	}
	return nil
}

func validateIntOrPercent(v *intstr.IntOrString, p *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.Type == intstr.String {
		if msgs := validation.IsValidPercent(v.StrVal); len(msgs) > 0 {
			return field.ErrorList{field.Invalid(p, v.StrVal, "must be an integer or percentage (e.g '5%')")}
		}
		return nil
	}
	if v.IntVal < 0 {
		return field.ErrorList{field.Invalid(p, v.IntVal, "must be greater than or equal to 0")}
	}
	return nil
}

func isZero(v *intstr.IntOrString) bool {
	return v != nil && (v.Type == intstr.Int && v.IntVal == 0 || v.Type == intstr.String && (v.StrVal == "0%" || v.StrVal == "0"))
}

func validateJobSpec(s *batchv1.JobSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct {
		name string
		v    *int32
	}{{"parallelism", s.Parallelism}, {"completions", s.Completions}, {"backoffLimit", s.BackoffLimit}} {
		if f.v != nil && *f.v < 0 {
			errs = append(errs, field.Invalid(path.Child(f.name), *f.v, "must be greater than or equal to 0"))
		}
	}
	if s.Selector != nil {
		errs = append(errs, validateSelector("job", s.Selector, &s.Template, path, false)...)
	}
	errs = append(errs, validateTemplate(&s.Template, path.Child("template"))...)
	switch s.Template.Spec.RestartPolicy {
	case corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(path.Child("template", "spec", "restartPolicy"), s.Template.Spec.RestartPolicy,
			[]corev1.RestartPolicy{corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}))
	}
	return errs
}

func selectorImmutable(n, o *metav1.LabelSelector) field.ErrorList {
	if equality.Semantic.DeepEqual(n, o) {
		return nil
	}
	return field.ErrorList{field.Invalid(field.NewPath("spec", "selector"), fmt.Sprint(n), "field is immutable")}
}
