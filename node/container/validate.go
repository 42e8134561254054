package container

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"
)

// MaxIDLength is the longest container ID accepted (containerd's limit).
const MaxIDLength = 76

var (
	idPattern     = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
	digestPattern = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// ValidID reports whether id can name a container: letters and digits,
// single '.', '_' or '-' between them, at most MaxIDLength bytes.
func ValidID(id string) bool {
	return len(id) <= MaxIDLength && idPattern.MatchString(id)
}

// CheckID returns an error wrapping ErrInvalid unless ValidID(id).
func CheckID(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("container ID %q: want letters and digits joined by single '.', '_' or '-', at most %d bytes: %w", id, MaxIDLength, ErrInvalid)
	}
	return nil
}

// NormalizeRef turns an image reference into the name runtimes store it
// under: "busybox" → "docker.io/library/busybox:latest". A bare digest
// ("sha256:<hex>"), the name given to unnamed imports, is kept as is.
func NormalizeRef(ref string) (string, error) {
	if digestPattern.MatchString(ref) {
		return ref, nil
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %v: %w", ref, err, ErrInvalid)
	}
	return named.String(), nil
}

// RefFromAnnotation is how ImportImage names an image from its
// org.opencontainers.image.ref.name annotation: a reference
// ("docker.io/library/busybox:1", "busybox:1", "example.com/app") is
// normalized; a bare word is only a tag with no repository ("latest") and
// names nothing (""), nor does anything unparsable.
func RefFromAnnotation(refName string) string {
	if !strings.ContainsAny(refName, "/:@") {
		return ""
	}
	named, err := reference.ParseDockerRef(refName)
	if err != nil {
		return ""
	}
	return named.String()
}

// Validate checks what can be checked without the image: a valid ID and
// image ref, absolute paths, known mount types and capabilities, sane
// resources and no reserved labels. Errors wrap ErrInvalid.
func (s ContainerSpec) Validate() error {
	if err := CheckID(s.ID); err != nil {
		return err
	}
	if _, err := NormalizeRef(s.Image); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("container %s: %s: %w", s.ID, fmt.Sprintf(format, args...), ErrInvalid)
	}
	for _, e := range s.Env {
		if name, _, _ := strings.Cut(e, "="); name == "" {
			return bad("env entry %q has no name", e)
		}
	}
	for name, p := range map[string]string{"netns path": s.NetNSPath, "log path": s.LogPath, "working dir": s.WorkingDir, "cgroup parent": s.CgroupParent} {
		if p != "" && !path.IsAbs(p) {
			return bad("%s %q is not absolute", name, p)
		}
	}
	for _, m := range s.Mounts {
		if !path.IsAbs(m.Destination) {
			return bad("mount destination %q is not absolute", m.Destination)
		}
		switch m.Type {
		case "", MountBind:
			if !path.IsAbs(m.Source) {
				return bad("bind mount source %q is not absolute", m.Source)
			}
		case MountTmpfs:
		default:
			return bad("mount type %q (want bind or tmpfs)", m.Type)
		}
	}
	r := s.Resources
	if r.MemoryLimitBytes < 0 || r.CPUQuota < 0 || r.CPUPeriod < 0 || r.CPUShares < 0 {
		return bad("negative resource limit %+v", r)
	}
	if r.MemoryLimitBytes > 0 && r.MemoryLimitBytes < 1<<20 {
		return bad("memory limit %d below 1 MiB", r.MemoryLimitBytes)
	}
	if r.CPUQuota > 0 && r.CPUQuota < 1000 {
		return bad("cpu quota %dus below 1ms", r.CPUQuota)
	}
	if r.CPUPeriod != 0 && (r.CPUPeriod < 1000 || r.CPUPeriod > 1000000) {
		return bad("cpu period %dus outside 1ms..1s", r.CPUPeriod)
	}
	if r.CPUShares != 0 && (r.CPUShares < 2 || r.CPUShares > 262144) {
		return bad("cpu shares %d outside 2..262144", r.CPUShares)
	}
	sec := s.Security
	if (sec.RunAsUser != nil && (*sec.RunAsUser < 0 || *sec.RunAsUser > 1<<32-2)) ||
		(sec.RunAsGroup != nil && (*sec.RunAsGroup < 0 || *sec.RunAsGroup > 1<<32-2)) {
		return bad("runAsUser/runAsGroup out of range")
	}
	for _, c := range append(slices.Clone(sec.CapAdd), sec.CapDrop...) {
		if _, err := NormalizeCapability(c); err != nil {
			return bad("%v", err)
		}
	}
	for k := range s.Labels {
		if strings.HasPrefix(k, ReservedLabelPrefix) {
			return bad("label %q uses the reserved prefix %s", k, ReservedLabelPrefix)
		}
	}
	return nil
}
