package apiserver

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Probes and lifecycle hooks, validated as Kubernetes does
// (pkg/apis/core/validation: validateProbe, validateLifecycle,
// validateHandler): exactly one action each, well-formed actions, sane
// numbers. Without it a hook with no action (a `grpc` hook saved without
// strict field validation comes out empty) or a probe with two actions is
// stored and fails only on the node.

// validateContainerProbes checks c's probes and hooks. Regular init
// containers may have neither (they run to completion); sidecars
// (restartPolicy Always) may.
func validateContainerProbes(c *corev1.Container, p *field.Path, initContainer bool) field.ErrorList {
	var errs field.ErrorList
	if initContainer && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
		for _, f := range []struct {
			name string
			set  bool
		}{{"lifecycle", c.Lifecycle != nil}, {"livenessProbe", c.LivenessProbe != nil},
			{"readinessProbe", c.ReadinessProbe != nil}, {"startupProbe", c.StartupProbe != nil}} {
			if f.set {
				errs = append(errs, field.Forbidden(p.Child(f.name), "may not be set for init containers without restartPolicy=Always"))
			}
		}
		return errs
	}
	if c.Lifecycle != nil {
		if h := c.Lifecycle.PostStart; h != nil {
			errs = append(errs, validateLifecycleHandler(h, p.Child("lifecycle", "postStart"))...)
		}
		if h := c.Lifecycle.PreStop; h != nil {
			errs = append(errs, validateLifecycleHandler(h, p.Child("lifecycle", "preStop"))...)
		}
	}
	errs = append(errs, validateProbe(c.LivenessProbe, p.Child("livenessProbe"), true)...)
	errs = append(errs, validateProbe(c.ReadinessProbe, p.Child("readinessProbe"), false)...)
	errs = append(errs, validateProbe(c.StartupProbe, p.Child("startupProbe"), true)...)
	if c.ReadinessProbe != nil && c.ReadinessProbe.TerminationGracePeriodSeconds != nil {
		errs = append(errs, field.Invalid(p.Child("readinessProbe", "terminationGracePeriodSeconds"),
			*c.ReadinessProbe.TerminationGracePeriodSeconds, "must not be set for readinessProbes"))
	}
	return errs
}

// validateProbe checks one probe; successOne is for liveness and startup
// probes, whose successThreshold must be 1.
func validateProbe(pr *corev1.Probe, p *field.Path, successOne bool) field.ErrorList {
	if pr == nil {
		return nil
	}
	errs := validateActions(p, []action{
		{"exec", pr.Exec != nil, func(q *field.Path) field.ErrorList { return validateExec(pr.Exec, q) }},
		{"httpGet", pr.HTTPGet != nil, func(q *field.Path) field.ErrorList { return validateHTTPGet(pr.HTTPGet, q) }},
		{"tcpSocket", pr.TCPSocket != nil, func(q *field.Path) field.ErrorList { return validatePortNumOrName(pr.TCPSocket.Port, q.Child("port")) }},
		{"grpc", pr.GRPC != nil, func(q *field.Path) field.ErrorList { return validatePortNum(pr.GRPC.Port, q.Child("port")) }},
	})
	for _, n := range []struct {
		name string
		v    int32
	}{{"initialDelaySeconds", pr.InitialDelaySeconds}, {"timeoutSeconds", pr.TimeoutSeconds}, {"periodSeconds", pr.PeriodSeconds},
		{"successThreshold", pr.SuccessThreshold}, {"failureThreshold", pr.FailureThreshold}} {
		if n.v < 0 {
			errs = append(errs, field.Invalid(p.Child(n.name), n.v, "must be greater than or equal to 0"))
		}
	}
	if successOne && pr.SuccessThreshold != 1 {
		errs = append(errs, field.Invalid(p.Child("successThreshold"), pr.SuccessThreshold, "must be 1"))
	}
	if g := pr.TerminationGracePeriodSeconds; g != nil && *g <= 0 {
		errs = append(errs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *g, "must be greater than 0"))
	}
	return errs
}

func validateLifecycleHandler(h *corev1.LifecycleHandler, p *field.Path) field.ErrorList {
	return validateActions(p, []action{
		{"exec", h.Exec != nil, func(q *field.Path) field.ErrorList { return validateExec(h.Exec, q) }},
		{"httpGet", h.HTTPGet != nil, func(q *field.Path) field.ErrorList { return validateHTTPGet(h.HTTPGet, q) }},
		{"tcpSocket", h.TCPSocket != nil, func(q *field.Path) field.ErrorList { return validatePortNumOrName(h.TCPSocket.Port, q.Child("port")) }},
		{"sleep", h.Sleep != nil, func(q *field.Path) field.ErrorList {
			if h.Sleep.Seconds < 0 {
				return field.ErrorList{field.Invalid(q.Child("seconds"), h.Sleep.Seconds, "must be greater than or equal to 0")}
			}
			return nil
		}},
	})
}

// action is one of the mutually exclusive actions of a probe or hook.
type action struct {
	name     string
	set      bool
	validate func(*field.Path) field.ErrorList
}

// validateActions requires exactly one set action and validates it, with
// Kubernetes' messages.
func validateActions(p *field.Path, actions []action) field.ErrorList {
	var errs field.ErrorList
	n := 0
	for _, a := range actions {
		if !a.set {
			continue
		}
		if n > 0 {
			errs = append(errs, field.Forbidden(p.Child(a.name), "may not specify more than 1 handler type"))
			continue
		}
		n++
		errs = append(errs, a.validate(p.Child(a.name))...)
	}
	if n == 0 {
		errs = append(errs, field.Required(p, "must specify a handler type"))
	}
	return errs
}

func validateExec(e *corev1.ExecAction, p *field.Path) field.ErrorList {
	if len(e.Command) == 0 {
		return field.ErrorList{field.Required(p.Child("command"), "")}
	}
	return nil
}

var httpSchemes = []string{string(corev1.URISchemeHTTP), string(corev1.URISchemeHTTPS)}

func validateHTTPGet(g *corev1.HTTPGetAction, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if g.Path == "" {
		errs = append(errs, field.Required(p.Child("path"), ""))
	}
	errs = append(errs, validatePortNumOrName(g.Port, p.Child("port"))...)
	if !contains(httpSchemes, string(g.Scheme)) {
		errs = append(errs, field.NotSupported(p.Child("scheme"), g.Scheme, httpSchemes))
	}
	for i, h := range g.HTTPHeaders {
		for _, msg := range validation.IsHTTPHeaderName(h.Name) {
			errs = append(errs, field.Invalid(p.Child("httpHeaders").Index(i).Child("name"), h.Name, msg))
		}
	}
	return errs
}

func validatePortNum(port int32, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsValidPortNum(int(port)) {
		errs = append(errs, field.Invalid(p, port, msg))
	}
	return errs
}

func validatePortNumOrName(port intstr.IntOrString, p *field.Path) field.ErrorList {
	if port.Type == intstr.Int {
		return validatePortNum(port.IntVal, p)
	}
	if port.StrVal == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsValidPortName(port.StrVal) {
		errs = append(errs, field.Invalid(p, port.StrVal, msg))
	}
	return errs
}
