// Package priorityclass keeps the built-in PriorityClasses every cluster
// has, as kube-apiserver does at start-up: system-cluster-critical
// (2000000000) and system-node-critical (2000001000), from
// node/admission.SystemPriorityClasses, with the builtin controller (the
// API does not let a class's value change, and its other fields are the
// user's).
package priorityclass

import (
	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/builtin"
)

// Controller creates the built-in PriorityClasses.
type Controller = builtin.Controller

// New returns the controller.
func New(c controller.Context) *Controller {
	return builtin.New(c, "built-in PriorityClasses", func() []builtin.Object {
		var out []builtin.Object
		for _, pc := range admission.SystemPriorityClasses() {
			out = append(out, builtin.Object{Resource: admission.ResourcePriorityClasses, Object: pc})
		}
		return out
	})
}
