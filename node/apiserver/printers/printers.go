// Package printers renders stored objects as metav1.Table (meta.k8s.io/v1),
// the answer the Kubernetes API gives to requests that ask for
// "application/json;as=Table;g=meta.k8s.io;v=v1". kubectl asks for it on every
// `kubectl get`; without it kubectl prints only NAME and AGE.
//
// The columns, their order, types, formats and priorities, and the text of
// every cell follow Kubernetes' own server-side printers
// (k8s.io/kubernetes/pkg/printers/internalversion, release 1.33), rewritten
// against the k8s.io/api v1 types that Shoal stores. Like kube-apiserver, the
// table always carries the wide (priority 1) columns: kubectl hides them unless
// it is run with -o wide.
//
// Differences from upstream that only show on objects Kubernetes would never
// hold: a nil replicas pointer in a Deployment, ReplicaSet or StatefulSet is
// printed as the API default, 1 (upstream prints the already-defaulted internal
// int32). Other API defaults (Service protocol, Secret type, PV phase …) are
// the store's business, as in Kubernetes; the printers print what they get.
package printers

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/shoal-dev/shoal/node/state"
)

// rowFunc renders one object: its cells (in column order) and row conditions.
// It fails only when obj is not of the Go type the printer expects.
type rowFunc func(obj state.Object, now time.Time) (metav1.TableRow, error)

type printer struct {
	columns func() []metav1.TableColumnDefinition
	row     rowFunc
}

// printersByKind maps "group/Kind" to its printer.
var printersByKind = map[string]printer{
	"/Node":                                 {nodeColumns, typed(printNode)},
	"/Namespace":                            {namespaceColumns, typed(printNamespace)},
	"/ConfigMap":                            {configMapColumns, typed(printConfigMap)},
	"/Secret":                               {secretColumns, typed(printSecret)},
	"/Event":                                {eventColumns, typed(printEvent)},
	"/Pod":                                  {podColumns, typed(printPod)},
	"/Service":                              {serviceColumns, typed(printService)},
	"/Endpoints":                            {endpointsColumns, typed(printEndpoints)},
	"discovery.k8s.io/EndpointSlice":        {endpointSliceColumns, typed(printEndpointSlice)},
	"/PersistentVolume":                     {persistentVolumeColumns, typed(printPersistentVolume)},
	"/PersistentVolumeClaim":                {persistentVolumeClaimColumns, typed(printPersistentVolumeClaim)},
	"apps/Deployment":                       {deploymentColumns, typed(printDeployment)},
	"apps/ReplicaSet":                       {replicaSetColumns, typed(printReplicaSet)},
	"apps/DaemonSet":                        {daemonSetColumns, typed(printDaemonSet)},
	"apps/StatefulSet":                      {statefulSetColumns, typed(printStatefulSet)},
	"batch/Job":                             {jobColumns, typed(printJob)},
	"batch/CronJob":                         {cronJobColumns, typed(printCronJob)},
	"scheduling.k8s.io/PriorityClass":       {priorityClassColumns, typed(printPriorityClass)},
	"/ServiceAccount":                       {serviceAccountColumns, typed(printServiceAccount)},
	"rbac.authorization.k8s.io/Role":        {roleColumns, typed(printRole)},
	"rbac.authorization.k8s.io/ClusterRole": {roleColumns, typed(printClusterRole)},
	"rbac.authorization.k8s.io/RoleBinding": {bindingColumns, typed(printRoleBinding)},
	"rbac.authorization.k8s.io/ClusterRoleBinding": {bindingColumns, typed(printClusterRoleBinding)},
}

// defaultPrinter serves kinds without a printer of their own: NAME and AGE.
var defaultPrinter = printer{defaultColumns, printDefault}

func printerFor(k *state.Kind) printer {
	if p, ok := printersByKind[k.Group+"/"+k.Kind]; ok {
		return p
	}
	return defaultPrinter
}

// ToTable renders objects of kind k as a metav1.Table (meta.k8s.io/v1) with the
// same columns as Kubernetes' own printers. Columns with Priority 1 are the
// -o wide ones; every row carries cells for all columns, in column order. Each
// row's Object is left empty: the caller fills it with PartialObjectMetadata
// or the object itself, according to the request's includeObject. Ages are
// measured from now. ListMeta (resourceVersion, continue) is the caller's.
//
// It fails if an object is nil or not of kind k's Go type.
func ToTable(k *state.Kind, objs []state.Object, now time.Time) (*metav1.Table, error) {
	if k == nil {
		return nil, fmt.Errorf("printers: nil kind")
	}
	p := printerFor(k)
	t := &metav1.Table{
		TypeMeta:          metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "Table"},
		ColumnDefinitions: p.columns(),
		Rows:              make([]metav1.TableRow, 0, len(objs)),
	}
	for i, obj := range objs {
		if obj == nil {
			return nil, fmt.Errorf("printers: %s: object %d is nil", k.Key(), i)
		}
		row, err := p.row(obj, now)
		if err != nil {
			return nil, fmt.Errorf("printers: %s: %w", k.Key(), err)
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

// typed adapts a printer of one concrete type to a rowFunc.
func typed[T any](f func(obj *T, now time.Time) metav1.TableRow) rowFunc {
	return func(obj state.Object, now time.Time) (metav1.TableRow, error) {
		o, ok := any(obj).(*T)
		if !ok || o == nil {
			return metav1.TableRow{}, fmt.Errorf("cannot print %T as %T", obj, (*T)(nil))
		}
		return f(o, now), nil
	}
}

func defaultColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{nameColumn(), ageColumn()}
}

func printDefault(obj state.Object, now time.Time) (metav1.TableRow, error) {
	return metav1.TableRow{Cells: []any{obj.GetName(), translateTimestampSince(obj.GetCreationTimestamp(), now)}}, nil
}

// Column definitions shared by most kinds.

func nameColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]}
}

func ageColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]}
}

func containersColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."}
}

func imagesColumn() metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."}
}

// translateTimestampSince is the elapsed time from timestamp to now in
// Kubernetes' human-readable approximation ("5m", "3h", "2d"), or "<unknown>"
// for an unset timestamp.
func translateTimestampSince(timestamp metav1.Time, now time.Time) string {
	if timestamp.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(timestamp.Time))
}

// translateMicroTimestampSince is translateTimestampSince for a MicroTime.
func translateMicroTimestampSince(timestamp metav1.MicroTime, now time.Time) string {
	if timestamp.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(timestamp.Time))
}

func printBoolPtr(value *bool) string {
	if value != nil {
		return printBool(*value)
	}
	return "<unset>"
}

func printBool(value bool) string {
	if value {
		return "True"
	}
	return "False"
}

// int32Value is *p, or def when p is nil.
func int32Value(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// listWithMore joins list with "," and, when more is set, appends how many of
// count items were left out.
func listWithMore(list []string, more bool, count, max int) string {
	ret := strings.Join(list, ",")
	if more {
		return fmt.Sprintf("%s + %d more...", ret, count-max)
	}
	return ret
}
