package container

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := ContainerSpec{ID: "pod-1234.main", Image: "busybox"}
	neg, big := int64(-1), int64(1)<<40
	for _, tc := range []struct {
		name   string
		mutate func(*ContainerSpec)
		valid  bool
	}{
		{"minimal", func(*ContainerSpec) {}, true},
		{"full", func(s *ContainerSpec) {
			s.Env = []string{"A=1", "B="}
			s.Mounts = []Mount{{Source: "/h", Destination: "/c"}, {Type: MountTmpfs, Destination: "/t"}}
			s.Resources = Resources{MemoryLimitBytes: 64 << 20, CPUQuota: 50000, CPUPeriod: 100000, CPUShares: 512}
			s.Security.CapAdd, s.Security.CapDrop = []string{"net_admin"}, []string{"ALL"}
			s.LogPath, s.NetNSPath, s.CgroupParent = "/var/log/x", "/run/netns/x", "/shoal/pod"
		}, true},
		{"empty id", func(s *ContainerSpec) { s.ID = "" }, false},
		{"id with slash", func(s *ContainerSpec) { s.ID = "a/b" }, false},
		{"id too long", func(s *ContainerSpec) { s.ID = strings.Repeat("a", MaxIDLength+1) }, false},
		{"double dash", func(s *ContainerSpec) { s.ID = "a--b" }, false},
		{"no image", func(s *ContainerSpec) { s.Image = "" }, false},
		{"bad image", func(s *ContainerSpec) { s.Image = "Busybox" }, false},
		{"env without name", func(s *ContainerSpec) { s.Env = []string{"=x"} }, false},
		{"relative log", func(s *ContainerSpec) { s.LogPath = "log" }, false},
		{"relative mount dst", func(s *ContainerSpec) { s.Mounts = []Mount{{Source: "/h", Destination: "c"}} }, false},
		{"relative bind src", func(s *ContainerSpec) { s.Mounts = []Mount{{Source: "h", Destination: "/c"}} }, false},
		{"unknown mount type", func(s *ContainerSpec) { s.Mounts = []Mount{{Type: "nfs", Destination: "/c"}} }, false},
		{"tiny memory", func(s *ContainerSpec) { s.Resources.MemoryLimitBytes = 4096 }, false},
		{"negative cpu", func(s *ContainerSpec) { s.Resources.CPUQuota = -5 }, false},
		{"shares out of range", func(s *ContainerSpec) { s.Resources.CPUShares = 1 }, false},
		{"negative uid", func(s *ContainerSpec) { s.Security.RunAsUser = &neg }, false},
		{"huge gid", func(s *ContainerSpec) { s.Security.RunAsGroup = &big }, false},
		{"unknown cap", func(s *ContainerSpec) { s.Security.CapAdd = []string{"CAP_FLY"} }, false},
		{"reserved label", func(s *ContainerSpec) { s.Labels = map[string]string{ReservedLabelPrefix + "x": ""} }, false},
	} {
		s := ok
		tc.mutate(&s)
		err := s.Validate()
		if (err == nil) != tc.valid || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: Validate() = %v, want valid=%v (errors wrap ErrInvalid)", tc.name, err, tc.valid)
		}
	}
}

func TestNormalizeRef(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                           "docker.io/library/busybox:latest",
		"busybox:1.36":                      "docker.io/library/busybox:1.36",
		"shoal.test/echo:1":                 "shoal.test/echo:1",
		"localhost:5000/a/b":                "localhost:5000/a/b:latest",
		"sha256:" + strings.Repeat("a", 64): "sha256:" + strings.Repeat("a", 64),
	} {
		if got, err := NormalizeRef(in); err != nil || got != want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NormalizeRef("Bad Ref"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad ref: %v", err)
	}
	for in, want := range map[string]string{"latest": "", "v1": "", "busybox:1": "docker.io/library/busybox:1", "example.com/app": "example.com/app:latest", "a b:c": ""} {
		if got := RefFromAnnotation(in); got != want {
			t.Errorf("RefFromAnnotation(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCapabilities(t *testing.T) {
	base := []string{"CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"}
	for _, tc := range []struct {
		add, drop, want []string
	}{
		{nil, nil, base},
		{[]string{"net_admin"}, []string{"NET_RAW"}, []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN"}},
		{[]string{"CHOWN"}, []string{"ALL"}, []string{"CAP_CHOWN"}},
		{[]string{"ALL"}, []string{"SYS_ADMIN"}, slices.DeleteFunc(AllCapabilities(), func(c string) bool { return c == "CAP_SYS_ADMIN" })},
	} {
		got := Security{CapAdd: tc.add, CapDrop: tc.drop}.ApplyCapabilities(base)
		if !slices.Equal(got, tc.want) {
			t.Errorf("add %v drop %v = %v, want %v", tc.add, tc.drop, got, tc.want)
		}
	}
	if (Security{}).NoNewPrivileges() != true || (Security{Privileged: true}).NoNewPrivileges() || (Security{AllowPrivilegeEscalation: true}).NoNewPrivileges() {
		t.Error("NoNewPrivileges defaults")
	}
	if n, err := NormalizeCapability("sys_admin"); n != "CAP_SYS_ADMIN" || err != nil {
		t.Errorf("NormalizeCapability = %q %v", n, err)
	}
}
