// Package scheduler places pods on nodes: pure placement logic over a
// read-only view of the cluster, like kube-scheduler's default profile but
// small, deterministic and fast. It starts no goroutines and does no I/O; the
// leader feeds it objects from its replica and commits what it decides.
//
// # Use
//
// One scheduling round:
//
//	snap, err := scheduler.NewSnapshot(nodes, pods, scheduler.Options{Seed: rev})
//	snap.SortPending(pending)               // priority, then age
//	for _, pod := range pending {
//		res, err := snap.Schedule(pod)
//		switch {
//		case err != nil:                    // malformed spec: PodScheduled=False, reason SchedulerError
//		case res.Scheduled():
//			snap.Assume(pod, res.NodeName)  // later pods see this one
//			bindings = append(bindings, ...)
//		default:                            // PodScheduled=False, res.Reason, res.Message; an Event
//			// res.NominatedNodeName/res.Victims: evict the victims (with a
//			// DisruptionTarget condition, reason PreemptionByScheduler) and
//			// set status.nominatedNodeName.
//		}
//	}
//	// commit bindings in one batch; Forget the pods whose binding failed.
//
// A snapshot may also be kept between rounds and brought up to date with
// Assume (pods bound by someone else) and Forget (pods deleted or finished);
// node changes need a new snapshot.
//
// # What is supported
//
// Filters, in kube-scheduler's order, with its exact messages: node
// unschedulable (cordon; pods tolerating node.kubernetes.io/unschedulable
// pass), taints and tolerations (NoSchedule, NoExecute; a node whose Ready
// condition is not True carries node.kubernetes.io/not-ready or
// node.kubernetes.io/unreachable as a NoSchedule taint, as the node
// lifecycle controller would write it), nodeSelector and required node
// affinity (In, NotIn, Exists, DoesNotExist, Gt, Lt, matchFields
// metadata.name; terms pinning node names restrict the nodes evaluated, as
// for DaemonSet pods), host ports (protocol, host IP, port), resources
// (cpu, memory, ephemeral-storage, extended resources and hugepages, pod
// count; containers summed, init containers maxed, sidecars, pod overhead,
// pod-level requests), volume node affinity of bound PersistentVolumes,
// topology spread constraints with whenUnsatisfiable DoNotSchedule (maxSkew,
// minDomains, matchLabelKeys, node inclusion policies), required pod
// affinity and anti-affinity (topologyKey, namespaces, namespaceSelector,
// matchLabelKeys, mismatchLabelKeys) and the placed pods' required
// anti-affinity against the new pod.
//
// Scores, with kube-scheduler's default weights: least allocated (1) and
// balanced allocation (1) of cpu and memory, PreferNoSchedule taints (3),
// preferred node affinity (2), topology spread constraints with
// ScheduleAnyway (2) — or, for pods without constraints, spreading of the
// pods of one controller (same controller ownerReference UID) over nodes and
// zones with kube-scheduler's default constraints (2) — preferred pod
// affinity and anti-affinity, both the pod's and the placed pods' (2), and
// image locality (1).
//
// Preemption of lower-priority pods, with kube-scheduler's candidate
// criteria; preemptionPolicy Never; no second preemption while the victims
// of the first terminate; a pod with status.nominatedNodeName goes there
// first when it fits. Scheduling gates hold a pod (reason SchedulingGated).
//
// Not supported: PodDisruptionBudgets in preemption (there are none in
// Shoal), nominated pods' reservations (pods are scheduled in priority
// order within a round, which covers the common case), dynamic resource
// allocation, volume limits and zones, storage-class provisioning checks
// (an unbound claim constrains nothing: Shoal's local provisioner follows the
// pod), node conditions other than Ready, scheduler profiles and extenders.
//
// # Speed
//
// kube-scheduler's own tricks: per-node aggregates of what is placed
// (requests, ports), so a filter is a few comparisons; sampling, so a pod is
// scored on a share of the nodes only (percentageOfNodesToScore, adaptive:
// all nodes below 100, else 50% minus 1% per 125 nodes, at least 5% and at
// least 100 nodes — 10% at 5,000 nodes) with a round-robin start over
// zone-interleaved nodes, so successive pods look at different nodes. And
// one of its own: the counts inter-pod affinity and topology spreading need
// (matching pods per topology domain) are kept incrementally per distinct
// selector and per distinct placed term, instead of walking every pod for
// every pod scheduled. Scheduling a pod without affinity allocates nothing.
//
// # Concurrency
//
// A Snapshot is used by one goroutine at a time. It never changes the
// objects it is given and keeps references to them; objects from the store
// are read-only, so that holds.
package scheduler
