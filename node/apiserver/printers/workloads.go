package printers

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
)

// defaultReplicas is the API default of spec.replicas for Deployments,
// ReplicaSets and StatefulSets, printed when the pointer is nil.
const defaultReplicas = 1

// layoutContainerCells lays out the names and the images of containers, each
// on one line, comma separated.
func layoutContainerCells(containers []corev1.Container) (names string, images string) {
	n := make([]string, len(containers))
	im := make([]string, len(containers))
	for i, c := range containers {
		n[i], im[i] = c.Name, c.Image
	}
	return strings.Join(n, ","), strings.Join(im, ",")
}

// Deployment

func deploymentColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
		{Name: "Up-to-date", Type: "string", Description: appsv1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"]},
		{Name: "Available", Type: "string", Description: appsv1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"]},
		ageColumn(),
		containersColumn(),
		imagesColumn(),
		{Name: "Selector", Type: "string", Priority: 1, Description: appsv1.DeploymentSpec{}.SwaggerDoc()["selector"]},
	}
}

func printDeployment(obj *appsv1.Deployment, now time.Time) metav1.TableRow {
	desiredReplicas := int32Value(obj.Spec.Replicas, defaultReplicas)
	selectorString := ""
	if selector, err := metav1.LabelSelectorAsSelector(obj.Spec.Selector); err != nil {
		selectorString = "<invalid>"
	} else {
		selectorString = selector.String()
	}
	containers, images := layoutContainerCells(obj.Spec.Template.Spec.Containers)
	return metav1.TableRow{Cells: []any{
		obj.Name, fmt.Sprintf("%d/%d", int64(obj.Status.ReadyReplicas), int64(desiredReplicas)),
		int64(obj.Status.UpdatedReplicas), int64(obj.Status.AvailableReplicas), translateTimestampSince(obj.CreationTimestamp, now),
		containers, images, selectorString,
	}}
}

// ReplicaSet

func replicaSetColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Desired", Type: "integer", Description: appsv1.ReplicaSetSpec{}.SwaggerDoc()["replicas"]},
		{Name: "Current", Type: "integer", Description: appsv1.ReplicaSetStatus{}.SwaggerDoc()["replicas"]},
		{Name: "Ready", Type: "integer", Description: appsv1.ReplicaSetStatus{}.SwaggerDoc()["readyReplicas"]},
		ageColumn(),
		containersColumn(),
		imagesColumn(),
		{Name: "Selector", Type: "string", Priority: 1, Description: appsv1.ReplicaSetSpec{}.SwaggerDoc()["selector"]},
	}
}

func printReplicaSet(obj *appsv1.ReplicaSet, now time.Time) metav1.TableRow {
	names, images := layoutContainerCells(obj.Spec.Template.Spec.Containers)
	return metav1.TableRow{Cells: []any{
		obj.Name, int64(int32Value(obj.Spec.Replicas, defaultReplicas)), int64(obj.Status.Replicas), int64(obj.Status.ReadyReplicas),
		translateTimestampSince(obj.CreationTimestamp, now),
		names, images, metav1.FormatLabelSelector(obj.Spec.Selector),
	}}
}

// DaemonSet

func daemonSetColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Desired", Type: "integer", Description: appsv1.DaemonSetStatus{}.SwaggerDoc()["desiredNumberScheduled"]},
		{Name: "Current", Type: "integer", Description: appsv1.DaemonSetStatus{}.SwaggerDoc()["currentNumberScheduled"]},
		{Name: "Ready", Type: "integer", Description: appsv1.DaemonSetStatus{}.SwaggerDoc()["numberReady"]},
		{Name: "Up-to-date", Type: "integer", Description: appsv1.DaemonSetStatus{}.SwaggerDoc()["updatedNumberScheduled"]},
		{Name: "Available", Type: "integer", Description: appsv1.DaemonSetStatus{}.SwaggerDoc()["numberAvailable"]},
		{Name: "Node Selector", Type: "string", Description: corev1.PodSpec{}.SwaggerDoc()["nodeSelector"]},
		ageColumn(),
		containersColumn(),
		imagesColumn(),
		{Name: "Selector", Type: "string", Priority: 1, Description: appsv1.DaemonSetSpec{}.SwaggerDoc()["selector"]},
	}
}

func printDaemonSet(obj *appsv1.DaemonSet, now time.Time) metav1.TableRow {
	names, images := layoutContainerCells(obj.Spec.Template.Spec.Containers)
	return metav1.TableRow{Cells: []any{
		obj.Name, int64(obj.Status.DesiredNumberScheduled), int64(obj.Status.CurrentNumberScheduled), int64(obj.Status.NumberReady),
		int64(obj.Status.UpdatedNumberScheduled), int64(obj.Status.NumberAvailable),
		labels.FormatLabels(obj.Spec.Template.Spec.NodeSelector), translateTimestampSince(obj.CreationTimestamp, now),
		names, images, metav1.FormatLabelSelector(obj.Spec.Selector),
	}}
}

// StatefulSet

func statefulSetColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
		ageColumn(),
		containersColumn(),
		imagesColumn(),
	}
}

func printStatefulSet(obj *appsv1.StatefulSet, now time.Time) metav1.TableRow {
	names, images := layoutContainerCells(obj.Spec.Template.Spec.Containers)
	return metav1.TableRow{Cells: []any{
		obj.Name, fmt.Sprintf("%d/%d", int64(obj.Status.ReadyReplicas), int64(int32Value(obj.Spec.Replicas, defaultReplicas))),
		translateTimestampSince(obj.CreationTimestamp, now),
		names, images,
	}}
}

// Job

func jobColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Status", Type: "string", Description: "Status of the job."},
		{Name: "Completions", Type: "string", Description: batchv1.JobStatus{}.SwaggerDoc()["succeeded"]},
		{Name: "Duration", Type: "string", Description: "Time required to complete the job."},
		ageColumn(),
		containersColumn(),
		imagesColumn(),
		{Name: "Selector", Type: "string", Priority: 1, Description: batchv1.JobSpec{}.SwaggerDoc()["selector"]},
	}
}

func printJob(obj *batchv1.Job, now time.Time) metav1.TableRow {
	var completions string
	if obj.Spec.Completions != nil {
		completions = fmt.Sprintf("%d/%d", obj.Status.Succeeded, *obj.Spec.Completions)
	} else {
		parallelism := int32Value(obj.Spec.Parallelism, 0)
		if parallelism > 1 {
			completions = fmt.Sprintf("%d/1 of %d", obj.Status.Succeeded, parallelism)
		} else {
			completions = fmt.Sprintf("%d/1", obj.Status.Succeeded)
		}
	}

	var jobDuration string
	switch {
	case obj.Status.StartTime == nil:
	case obj.Status.CompletionTime == nil:
		jobDuration = duration.HumanDuration(now.Sub(obj.Status.StartTime.Time))
	default:
		jobDuration = duration.HumanDuration(obj.Status.CompletionTime.Sub(obj.Status.StartTime.Time))
	}

	var status string
	switch {
	case hasJobCondition(obj.Status.Conditions, batchv1.JobComplete):
		status = "Complete"
	case hasJobCondition(obj.Status.Conditions, batchv1.JobFailed):
		status = "Failed"
	case obj.DeletionTimestamp != nil:
		status = "Terminating"
	case hasJobCondition(obj.Status.Conditions, batchv1.JobSuspended):
		status = "Suspended"
	case hasJobCondition(obj.Status.Conditions, batchv1.JobFailureTarget):
		status = "FailureTarget"
	default:
		status = "Running"
	}

	names, images := layoutContainerCells(obj.Spec.Template.Spec.Containers)
	return metav1.TableRow{Cells: []any{
		obj.Name, status, completions, jobDuration, translateTimestampSince(obj.CreationTimestamp, now),
		names, images, metav1.FormatLabelSelector(obj.Spec.Selector),
	}}
}

// hasJobCondition reports whether the first condition of type conditionType
// is True.
func hasJobCondition(conditions []batchv1.JobCondition, conditionType batchv1.JobConditionType) bool {
	for _, condition := range conditions {
		if condition.Type == conditionType {
			return condition.Status == corev1.ConditionTrue
		}
	}
	return false
}

// CronJob

func cronJobColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Schedule", Type: "string", Description: batchv1.CronJobSpec{}.SwaggerDoc()["schedule"]},
		{Name: "Timezone", Type: "string", Description: batchv1.CronJobSpec{}.SwaggerDoc()["timeZone"]},
		{Name: "Suspend", Type: "boolean", Description: batchv1.CronJobSpec{}.SwaggerDoc()["suspend"]},
		{Name: "Active", Type: "integer", Description: batchv1.CronJobStatus{}.SwaggerDoc()["active"]},
		{Name: "Last Schedule", Type: "string", Description: batchv1.CronJobStatus{}.SwaggerDoc()["lastScheduleTime"]},
		ageColumn(),
		containersColumn(),
		imagesColumn(),
		{Name: "Selector", Type: "string", Priority: 1, Description: batchv1.JobSpec{}.SwaggerDoc()["selector"]},
	}
}

func printCronJob(obj *batchv1.CronJob, now time.Time) metav1.TableRow {
	lastScheduleTime := "<none>"
	if obj.Status.LastScheduleTime != nil {
		lastScheduleTime = translateTimestampSince(*obj.Status.LastScheduleTime, now)
	}
	timeZone := "<none>"
	if obj.Spec.TimeZone != nil {
		timeZone = *obj.Spec.TimeZone
	}
	names, images := layoutContainerCells(obj.Spec.JobTemplate.Spec.Template.Spec.Containers)
	return metav1.TableRow{Cells: []any{
		obj.Name, obj.Spec.Schedule, timeZone, printBoolPtr(obj.Spec.Suspend), int64(len(obj.Status.Active)), lastScheduleTime,
		translateTimestampSince(obj.CreationTimestamp, now),
		names, images, metav1.FormatLabelSelector(obj.Spec.JobTemplate.Spec.Selector),
	}}
}
