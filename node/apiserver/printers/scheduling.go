package printers

import (
	"time"

	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PriorityClass, as kubectl shows it from kube-apiserver:
//
//	NAME                      VALUE        GLOBAL-DEFAULT   AGE   PREEMPTIONPOLICY
//	system-cluster-critical   2000000000   false            7m    PreemptLowerPriority

func priorityClassColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Value", Type: "integer", Description: schedulingv1.PriorityClass{}.SwaggerDoc()["value"]},
		{Name: "Global-Default", Type: "boolean", Description: schedulingv1.PriorityClass{}.SwaggerDoc()["globalDefault"]},
		ageColumn(),
		{Name: "PreemptionPolicy", Type: "string", Description: schedulingv1.PriorityClass{}.SwaggerDoc()["preemptionPolicy"]},
	}
}

// printPriorityClass prints an unset preemption policy as an empty cell,
// as upstream does (the API defaults it, so stored classes have one).
func printPriorityClass(obj *schedulingv1.PriorityClass, now time.Time) metav1.TableRow {
	policy := ""
	if obj.PreemptionPolicy != nil {
		policy = string(*obj.PreemptionPolicy)
	}
	return metav1.TableRow{Cells: []any{obj.Name, int64(obj.Value), obj.GlobalDefault,
		translateTimestampSince(obj.CreationTimestamp, now), policy}}
}
