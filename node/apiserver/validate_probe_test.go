package apiserver

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/defaults"
)

func TestValidateProbesAndHooks(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	grace := int64(5)
	httpProbe := func() *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}}
	}
	for _, tc := range []struct {
		name string
		init bool
		edit func(c *corev1.Container)
		want []string // "field: message part"; none = valid
	}{
		{"every action kind valid", false, func(c *corev1.Container) {
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
			c.ReadinessProbe = httpProbe()
			c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090}}}
			c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(80)}},
				PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}}
		}, nil},
		{"probe without an action", false, func(c *corev1.Container) { c.LivenessProbe = &corev1.Probe{} },
			[]string{"spec.containers[0].livenessProbe: Required value: must specify a handler type"}},
		{"probe with two actions", false, func(c *corev1.Container) {
			c.ReadinessProbe = httpProbe()
			c.ReadinessProbe.GRPC = &corev1.GRPCAction{Port: 9090}
		}, []string{"spec.containers[0].readinessProbe.grpc: Forbidden: may not specify more than 1 handler type"}},
		{"empty hook (a grpc hook without strict validation)", false, func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{}}
		}, []string{"spec.containers[0].lifecycle.preStop: Required value: must specify a handler type"}},
		{"bad actions", false, func(c *corev1.Container) {
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{}}}
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 70000}}}
			c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("not_a_name")}}}
		}, []string{"livenessProbe.exec.command: Required value", "readinessProbe.grpc.port: Invalid value: 70000",
			"startupProbe.tcpSocket.port: Invalid value: \"not_a_name\""}},
		{"numbers", false, func(c *corev1.Container) {
			c.LivenessProbe = httpProbe()
			c.LivenessProbe.SuccessThreshold = 2
			c.LivenessProbe.PeriodSeconds = -1
			c.ReadinessProbe = httpProbe()
			c.ReadinessProbe.TerminationGracePeriodSeconds = &grace
		}, []string{"livenessProbe.successThreshold: Invalid value: 2: must be 1", "livenessProbe.periodSeconds: Invalid value: -1",
			"readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes"}},
		{"init container with a probe", true, func(c *corev1.Container) { c.ReadinessProbe = httpProbe() },
			[]string{"spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"}},
		{"sidecar with a probe", true, func(c *corev1.Container) {
			c.RestartPolicy = &always
			c.ReadinessProbe = httpProbe()
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
			c := &pod.Spec.Containers[0]
			if tc.init {
				pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
				c = &pod.Spec.InitContainers[0]
			}
			tc.edit(c)
			defaults.Apply(pod) // the API defaults before it validates
			errs := validatePodSpec(&pod.Spec, field.NewPath("spec"))
			got := errs.ToAggregate()
			if len(tc.want) == 0 {
				if got != nil {
					t.Fatalf("valid spec refused: %v", got)
				}
				return
			}
			if got == nil {
				t.Fatalf("invalid spec accepted; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("errors %q\nlack %q", got.Error(), w)
				}
			}
		})
	}
}
