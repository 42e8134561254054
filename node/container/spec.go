package container

// ContainerSpec is everything the runtime needs to create one container.
//
// Command and Args follow Kubernetes: neither set runs the image's Entrypoint
// and Cmd; Command replaces the Entrypoint and drops the image's Cmd; Args
// alone replaces the Cmd. Env is added to the image's environment, a name
// set in both taking this value. WorkingDir "" keeps the image's.
type ContainerSpec struct {
	ID         string
	Image      string // ref; normalized like GetImage
	Command    []string
	Args       []string
	Env        []string // NAME=value
	WorkingDir string
	Hostname   string

	// NetNSPath is a network namespace to join (the containers of a pod all
	// join the pod's). "" gives the container a private, empty one.
	NetNSPath string
	Mounts    []Mount
	Resources Resources
	Security  Security
	// LogPath receives stdout and stderr, appended (the file is created,
	// its directory too). The implementation decides the format: raw
	// output, or CRI log records through a logger process that also
	// rotates the file (containerd with Config.LogBinary; see
	// node/container/logfile). "" discards output.
	LogPath string
	// Labels are returned by Status and List. Keys starting with
	// ReservedLabelPrefix belong to implementations.
	Labels map[string]string
	// CgroupParent is the cgroup (an absolute path in the hierarchy, e.g.
	// "/shoal/pod-<uid>") under which the container's cgroup <ID> is made.
	// "" uses the implementation's default parent.
	CgroupParent string

	// Stdin keeps the main process's stdin open for Runtime.AttachStdin
	// (Kubernetes' stdin): it blocks reading until a writer attaches and
	// sees end of file only when the run ends, not when a writer goes,
	// unless StdinOnce. Without Stdin the process's stdin is empty.
	Stdin bool
	// StdinOnce closes stdin for good (the process sees end of file) when
	// the first writer AttachStdin returned is closed; the next run of the
	// container gets a fresh one. It means nothing without Stdin.
	StdinOnce bool
	// TTY gives the main process a terminal (process.terminal): stdout and
	// stderr both go to it, so its log has only stdout, and
	// Runtime.ResizeTTY sets its size.
	TTY bool
}

// ReservedLabelPrefix starts the label keys implementations keep for
// themselves; ContainerSpec.Labels may not use it.
const ReservedLabelPrefix = "io.shoal.runtime/"

// Mount is a filesystem mounted into a container.
type Mount struct {
	Source      string // host path for "bind"; ignored for "tmpfs"
	Destination string // absolute path in the container
	Type        string // "bind" (the default when "") or "tmpfs"
	ReadOnly    bool
}

// Mount types.
const (
	MountBind  = "bind"
	MountTmpfs = "tmpfs"
)

// Resources are the cgroup limits of a container. Zero means unlimited (or
// the kernel default for CPUShares).
type Resources struct {
	MemoryLimitBytes int64
	CPUQuota         int64 // microseconds of CPU per CPUPeriod
	CPUPeriod        int64 // microseconds; 100000 when 0 and CPUQuota is set
	CPUShares        int64 // relative weight, 2..262144
}

// Security is a container's privileges. The zero value is the default:
// containerd's default capability set, no-new-privileges, image user.
type Security struct {
	RunAsUser  *int64 // nil keeps the image's user
	RunAsGroup *int64 // nil takes the user's primary group from the image's /etc/passwd (0 if unknown)

	ReadOnlyRootFS bool
	// Privileged grants every capability and device and unmasks /proc and
	// /sys; it implies AllowPrivilegeEscalation.
	Privileged bool
	// AllowPrivilegeEscalation clears no_new_privs (which is set otherwise).
	AllowPrivilegeEscalation bool
	// CapAdd and CapDrop take names with or without "CAP_" in any case, or
	// "ALL". Kubernetes order: add ALL, drop ALL, add the rest, drop the rest.
	CapAdd  []string
	CapDrop []string
}

// NoNewPrivileges reports whether the container's processes run with
// no_new_privs: true unless Privileged or AllowPrivilegeEscalation.
func (s Security) NoNewPrivileges() bool {
	return !s.Privileged && !s.AllowPrivilegeEscalation
}
