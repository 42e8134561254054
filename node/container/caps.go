package container

import (
	"fmt"
	"slices"
	"strings"
)

// CapAll stands for every capability in Security.CapAdd/CapDrop.
const CapAll = "ALL"

var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// AllCapabilities returns every Linux capability name, "CAP_" prefixed.
func AllCapabilities() []string { return slices.Clone(allCaps) }

// NormalizeCapability turns "net_admin", "NET_ADMIN" or "CAP_NET_ADMIN"
// into "CAP_NET_ADMIN" and "all" into CapAll; unknown names are an error.
func NormalizeCapability(name string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if n == CapAll {
		return CapAll, nil
	}
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	if !slices.Contains(allCaps, n) {
		return "", fmt.Errorf("unknown capability %q", name)
	}
	return n, nil
}

// ApplyCapabilities returns base with Security's CapAdd and CapDrop applied
// the Kubernetes way: add ALL, then drop ALL, then add the named ones, then
// drop the named ones. Names must have passed Validate.
func (s Security) ApplyCapabilities(base []string) []string {
	caps := slices.Clone(base)
	var add, drop []string
	for _, c := range s.CapAdd {
		n, _ := NormalizeCapability(c)
		if n == CapAll {
			caps = AllCapabilities()
		} else if n != "" {
			add = append(add, n)
		}
	}
	for _, c := range s.CapDrop {
		n, _ := NormalizeCapability(c)
		if n == CapAll {
			caps = nil
		} else if n != "" {
			drop = append(drop, n)
		}
	}
	for _, c := range add {
		if !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	return slices.DeleteFunc(caps, func(c string) bool { return slices.Contains(drop, c) })
}
