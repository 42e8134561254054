// Package defaults sets the fields the Kubernetes API server defaults, for
// every object Shoal stores: the API server applies them to what clients
// send, and the leader's controllers to the objects they create through
// the proposer (which bypasses the API server).
package defaults

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shoal-dev/shoal/node/state"
)

// Labels Kubernetes sets on Jobs and their pods.
const (
	labelNamespaceName    = "kubernetes.io/metadata.name"
	labelJobControllerUID = "batch.kubernetes.io/controller-uid"
	labelJobName          = "batch.kubernetes.io/job-name"
	labelLegacyUID        = "controller-uid"
	labelLegacyJobName    = "job-name"
)

func ptr[T any](v T) *T { return &v }

// DefaultTolerationSeconds is how long a pod stays bound to a node that is
// not Ready (Ready=False, taint node.kubernetes.io/not-ready) or that gossip
// lost (Ready=Unknown, taint node.kubernetes.io/unreachable) before the
// node lifecycle controller evicts it so its controller can replace it
// elsewhere: the tolerationSeconds of the two NoExecute tolerations every
// new pod gets unless it tolerates those taints itself (Kubernetes'
// DefaultTolerationSeconds admission plugin, whose default is 300 s).
// Shoal's default is 2 s: gossip already takes about 2 s to declare a node
// dead, and a dead node's pods should run again elsewhere within 5 s
// (measured: p99 4.7 s; 7.9 s with 5 s). An agent restart is shorter than
// detection plus toleration, so it evicts nothing.
//
// Set it (e.g. from a flag) before the API server and the controllers
// start; it is read without synchronisation.
var DefaultTolerationSeconds int64 = 2

// Apply fills the fields Kubernetes defaults and clients rely on. It runs
// on every create and update (the client may have dropped a defaulted field)
// and is idempotent. Pods (not pod templates) also get the not-ready and
// unreachable tolerations of DefaultTolerationSeconds, on update too, as
// Kubernetes' admission plugin adds them (a replaced pod keeps them).
func Apply(obj state.Object) {
	switch o := obj.(type) {
	case *corev1.Pod:
		defaultPodSpec(&o.Spec)
		requestsFromLimits(&o.Spec)
		addDefaultTolerations(&o.Spec)
	case *corev1.Service:
		defaultService(o)
	case *corev1.Secret:
		if o.Type == "" {
			o.Type = corev1.SecretTypeOpaque
		}
		// stringData is write-only: it is merged into data (winning over it)
		// and never stored, as in Kubernetes.
		if len(o.StringData) > 0 {
			d := make(map[string][]byte, len(o.Data)+len(o.StringData))
			for k, v := range o.Data {
				d[k] = v
			}
			for k, v := range o.StringData {
				d[k] = []byte(v)
			}
			o.Data = d
		}
		o.StringData = nil
	case *corev1.Namespace:
		if o.Labels[labelNamespaceName] != o.Name {
			l := make(map[string]string, len(o.Labels)+1)
			for k, v := range o.Labels {
				l[k] = v
			}
			l[labelNamespaceName] = o.Name
			o.Labels = l
		}
	case *corev1.Endpoints:
		for i := range o.Subsets {
			for j := range o.Subsets[i].Ports {
				if o.Subsets[i].Ports[j].Protocol == "" {
					o.Subsets[i].Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	case *corev1.PersistentVolume:
		if o.Spec.PersistentVolumeReclaimPolicy == "" {
			o.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
		}
		if o.Spec.VolumeMode == nil {
			o.Spec.VolumeMode = ptr(corev1.PersistentVolumeFilesystem)
		}
	case *corev1.PersistentVolumeClaim:
		if o.Spec.VolumeMode == nil {
			o.Spec.VolumeMode = ptr(corev1.PersistentVolumeFilesystem)
		}
	case *appsv1.Deployment:
		defaultDeployment(o)
	case *appsv1.ReplicaSet:
		if o.Spec.Replicas == nil {
			o.Spec.Replicas = ptr(int32(1))
		}
		defaultPodSpec(&o.Spec.Template.Spec)
	case *appsv1.StatefulSet:
		defaultStatefulSet(o)
	case *appsv1.DaemonSet:
		defaultDaemonSet(o)
	case *batchv1.Job:
		defaultJobSpec(&o.Spec)
	case *schedulingv1.PriorityClass:
		if o.PreemptionPolicy == nil {
			o.PreemptionPolicy = ptr(corev1.PreemptLowerPriority)
		}
	case *batchv1.CronJob:
		s := &o.Spec
		if s.ConcurrencyPolicy == "" {
			s.ConcurrencyPolicy = batchv1.AllowConcurrent
		}
		if s.Suspend == nil {
			s.Suspend = ptr(false)
		}
		if s.SuccessfulJobsHistoryLimit == nil {
			s.SuccessfulJobsHistoryLimit = ptr(int32(3))
		}
		if s.FailedJobsHistoryLimit == nil {
			s.FailedJobsHistoryLimit = ptr(int32(1))
		}
		defaultPodSpec(&s.JobTemplate.Spec.Template.Spec)
	}
}

// ApplyCreate sets what only a new object gets: its initial status
// phase, a Job's generated selector.
func ApplyCreate(obj state.Object) {
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Status.Phase == "" {
			o.Status.Phase = corev1.PodPending
		}
	case *corev1.Namespace:
		if o.Status.Phase == "" {
			o.Status.Phase = corev1.NamespaceActive
		}
	case *corev1.PersistentVolume:
		if o.Status.Phase == "" {
			o.Status.Phase = corev1.VolumePending
		}
	case *corev1.PersistentVolumeClaim:
		if o.Status.Phase == "" {
			o.Status.Phase = corev1.ClaimPending
		}
	case *batchv1.Job:
		generateJobSelector(o)
	}
}

// generateJobSelector gives a Job without a manual selector the selector and
// pod labels Kubernetes generates from its UID.
func generateJobSelector(j *batchv1.Job) {
	if j.Spec.ManualSelector != nil && *j.Spec.ManualSelector {
		return
	}
	uid := string(j.UID)
	tl := make(map[string]string, len(j.Spec.Template.Labels)+4)
	for k, v := range j.Spec.Template.Labels {
		tl[k] = v
	}
	tl[labelJobControllerUID], tl[labelLegacyUID] = uid, uid
	tl[labelJobName], tl[labelLegacyJobName] = j.Name, j.Name
	j.Spec.Template.Labels = tl
	if j.Spec.Selector == nil {
		j.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{labelJobControllerUID: uid}}
	}
}

// addDefaultTolerations adds to a pod the NoExecute tolerations of the
// not-ready and unreachable taints with DefaultTolerationSeconds, each
// unless the pod already tolerates that taint (a toleration with that key
// or no key, and effect NoExecute or none), as Kubernetes'
// DefaultTolerationSeconds admission plugin does. s.Tolerations gets a new
// slice when something is added.
func addDefaultTolerations(s *corev1.PodSpec) {
	tolerates := func(key string) bool {
		for _, t := range s.Tolerations {
			if (t.Key == key || t.Key == "") && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				return true
			}
		}
		return false
	}
	notReady, unreachable := tolerates(corev1.TaintNodeNotReady), tolerates(corev1.TaintNodeUnreachable)
	if notReady && unreachable {
		return
	}
	tols := make([]corev1.Toleration, len(s.Tolerations), len(s.Tolerations)+2)
	copy(tols, s.Tolerations)
	for _, t := range []struct {
		key string
		has bool
	}{{corev1.TaintNodeNotReady, notReady}, {corev1.TaintNodeUnreachable, unreachable}} {
		if !t.has {
			tols = append(tols, corev1.Toleration{
				Key: t.key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute,
				TolerationSeconds: ptr(DefaultTolerationSeconds),
			})
		}
	}
	s.Tolerations = tols
}

func defaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	if s.EnableServiceLinks == nil {
		s.EnableServiceLinks = ptr(corev1.DefaultEnableServiceLinks)
	}
	for i := range s.InitContainers {
		defaultContainer(&s.InitContainers[i])
	}
	for i := range s.Containers {
		defaultContainer(&s.Containers[i])
	}
	for i := range s.Volumes {
		v := &s.Volumes[i].VolumeSource
		switch {
		case v.ConfigMap != nil && v.ConfigMap.DefaultMode == nil:
			v.ConfigMap.DefaultMode = ptr(corev1.ConfigMapVolumeSourceDefaultMode)
		case v.Secret != nil && v.Secret.DefaultMode == nil:
			v.Secret.DefaultMode = ptr(corev1.SecretVolumeSourceDefaultMode)
		case v.DownwardAPI != nil && v.DownwardAPI.DefaultMode == nil:
			v.DownwardAPI.DefaultMode = ptr(corev1.DownwardAPIVolumeSourceDefaultMode)
		case v.Projected != nil && v.Projected.DefaultMode == nil:
			v.Projected.DefaultMode = ptr(corev1.ProjectedVolumeSourceDefaultMode)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if t := src.ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
					t.ExpirationSeconds = ptr(int64(3600)) // kubectl describe dereferences it
				}
			}
		}
	}
}

func defaultContainer(c *corev1.Container) {
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = pullPolicyFor(c.Image)
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = 1
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = 10
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = 1
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 3
		}
		defaultHTTPGet(p.HTTPGet)
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil {
				defaultHTTPGet(h.HTTPGet)
			}
		}
	}
	for i := range c.Env {
		if f := c.Env[i].ValueFrom; f != nil && f.FieldRef != nil && f.FieldRef.APIVersion == "" {
			f.FieldRef.APIVersion = "v1"
		}
	}
}

// requestsFromLimits gives a container's resources without a request the
// limit as request, as Kubernetes defaults pods (not templates, whose pods
// get it when they are created): the scheduler and the QoS class read the
// requests.
func requestsFromLimits(s *corev1.PodSpec) {
	for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range cs {
			r := &cs[i].Resources
			for name, limit := range r.Limits {
				if _, ok := r.Requests[name]; ok {
					continue
				}
				if r.Requests == nil {
					r.Requests = corev1.ResourceList{}
				}
				r.Requests[name] = limit.DeepCopy()
			}
		}
	}
}

// defaultHTTPGet sets an httpGet action's path and scheme as Kubernetes
// does (SetDefaults_HTTPGetAction).
func defaultHTTPGet(g *corev1.HTTPGetAction) {
	if g == nil {
		return
	}
	if g.Path == "" {
		g.Path = "/"
	}
	if g.Scheme == "" {
		g.Scheme = corev1.URISchemeHTTP
	}
}

// pullPolicyFor is Always for ":latest" or untagged images, else IfNotPresent.
func pullPolicyFor(image string) corev1.PullPolicy {
	if strings.Contains(image, "@") {
		return corev1.PullIfNotPresent
	}
	last := image[strings.LastIndexByte(image, '/')+1:]
	if i := strings.LastIndexByte(last, ':'); i >= 0 && last[i+1:] != "latest" {
		return corev1.PullIfNotPresent
	}
	return corev1.PullAlways
}

func defaultService(o *corev1.Service) {
	s := &o.Spec
	if s.Type == "" {
		s.Type = corev1.ServiceTypeClusterIP
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = corev1.ServiceAffinityNone
	}
	if s.SessionAffinity == corev1.ServiceAffinityClientIP {
		if s.SessionAffinityConfig == nil {
			s.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		}
		if s.SessionAffinityConfig.ClientIP == nil {
			s.SessionAffinityConfig.ClientIP = &corev1.ClientIPConfig{}
		}
		if s.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			s.SessionAffinityConfig.ClientIP.TimeoutSeconds = ptr(corev1.DefaultClientIPServiceAffinitySeconds)
		}
	}
	if s.Type != corev1.ServiceTypeExternalName && s.InternalTrafficPolicy == nil {
		s.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
	}
	if (s.Type == corev1.ServiceTypeNodePort || s.Type == corev1.ServiceTypeLoadBalancer) && s.ExternalTrafficPolicy == "" {
		s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 || p.TargetPort.Type == intstr.String && p.TargetPort.StrVal == "" {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
}

func defaultDeployment(o *appsv1.Deployment) {
	s := &o.Spec
	if s.Replicas == nil {
		s.Replicas = ptr(int32(1))
	}
	if s.Strategy.Type == "" {
		s.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if s.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if s.Strategy.RollingUpdate == nil {
			s.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if s.Strategy.RollingUpdate.MaxUnavailable == nil {
			s.Strategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromString("25%"))
		}
		if s.Strategy.RollingUpdate.MaxSurge == nil {
			s.Strategy.RollingUpdate.MaxSurge = ptr(intstr.FromString("25%"))
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptr(int32(10))
	}
	if s.ProgressDeadlineSeconds == nil {
		s.ProgressDeadlineSeconds = ptr(int32(600))
	}
	defaultPodSpec(&s.Template.Spec)
}

func defaultStatefulSet(o *appsv1.StatefulSet) {
	s := &o.Spec
	if s.Replicas == nil {
		s.Replicas = ptr(int32(1))
	}
	if s.PodManagementPolicy == "" {
		s.PodManagementPolicy = appsv1.OrderedReadyPodManagement
	}
	if s.UpdateStrategy.Type == "" {
		s.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
	}
	if s.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType {
		if s.UpdateStrategy.RollingUpdate == nil {
			s.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{}
		}
		if s.UpdateStrategy.RollingUpdate.Partition == nil {
			s.UpdateStrategy.RollingUpdate.Partition = ptr(int32(0))
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptr(int32(10))
	}
	if s.PersistentVolumeClaimRetentionPolicy == nil {
		s.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{}
	}
	if p := s.PersistentVolumeClaimRetentionPolicy; p.WhenDeleted == "" {
		p.WhenDeleted = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	if p := s.PersistentVolumeClaimRetentionPolicy; p.WhenScaled == "" {
		p.WhenScaled = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	}
	for i := range s.VolumeClaimTemplates {
		if s.VolumeClaimTemplates[i].Spec.VolumeMode == nil {
			s.VolumeClaimTemplates[i].Spec.VolumeMode = ptr(corev1.PersistentVolumeFilesystem)
		}
	}
	defaultPodSpec(&s.Template.Spec)
}

func defaultDaemonSet(o *appsv1.DaemonSet) {
	s := &o.Spec
	if s.UpdateStrategy.Type == "" {
		s.UpdateStrategy.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	if s.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if s.UpdateStrategy.RollingUpdate == nil {
			s.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
		}
		if s.UpdateStrategy.RollingUpdate.MaxUnavailable == nil {
			s.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt32(1))
		}
		if s.UpdateStrategy.RollingUpdate.MaxSurge == nil {
			s.UpdateStrategy.RollingUpdate.MaxSurge = ptr(intstr.FromInt32(0))
		}
	}
	if s.RevisionHistoryLimit == nil {
		s.RevisionHistoryLimit = ptr(int32(10))
	}
	defaultPodSpec(&s.Template.Spec)
}

func defaultJobSpec(s *batchv1.JobSpec) {
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions = ptr(int32(1))
	}
	if s.Parallelism == nil {
		s.Parallelism = ptr(int32(1))
	}
	if s.BackoffLimit == nil {
		s.BackoffLimit = ptr(int32(6))
	}
	if s.CompletionMode == nil {
		s.CompletionMode = ptr(batchv1.NonIndexedCompletion)
	}
	if s.Suspend == nil {
		s.Suspend = ptr(false)
	}
	if s.PodReplacementPolicy == nil {
		if s.PodFailurePolicy == nil {
			s.PodReplacementPolicy = ptr(batchv1.TerminatingOrFailed)
		} else {
			s.PodReplacementPolicy = ptr(batchv1.Failed)
		}
	}
	defaultPodSpec(&s.Template.Spec)
}
