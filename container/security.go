package container

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/capability"
	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultCapabilities is the set containerd and CRI-O give a container that
// asks for nothing else.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCapabilities is what "ALL" and privileged grant: every capability this
// process holds in its bounding set, as containerd does. A capability the
// runtime lacks (CAP_SYS_RESOURCE on some hosts) cannot be handed on.
func allCapabilities() []string {
	var caps []string
	current, err := capability.NewPid2(0)
	if err == nil {
		err = current.Load()
	}
	for _, c := range capability.ListKnown() {
		if err == nil && !current.Get(capability.BOUNDING, c) {
			continue
		}
		caps = append(caps, "CAP_"+strings.ToUpper(c.String()))
	}
	return caps
}

// knownCapabilities are the names a config may use.
func knownCapabilities() []string {
	var caps []string
	for _, c := range capability.ListKnown() {
		caps = append(caps, "CAP_"+strings.ToUpper(c.String()))
	}
	return caps
}

// normaliseCap accepts "NET_ADMIN", "net_admin" and "CAP_NET_ADMIN".
func normaliseCap(name string, known []string) (string, error) {
	c := strings.ToUpper(name)
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	if !slices.Contains(known, c) {
		return "", fmt.Errorf("security context: unknown capability %q: %w", name, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func setCapabilities(spec *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext) error {
	known, all := knownCapabilities(), allCapabilities()
	caps := slices.Clone(defaultCapabilities)
	if sc.GetPrivileged() {
		caps = all
	}
	add := sc.GetCapabilities().GetAddCapabilities()
	drop := sc.GetCapabilities().GetDropCapabilities()
	ambient := sc.GetCapabilities().GetAddAmbientCapabilities()
	// Kubernetes applies add before drop, and ALL in either means all.
	if slices.ContainsFunc(add, isAll) {
		caps = all
	} else {
		for _, a := range add {
			c, err := normaliseCap(a, known)
			if err != nil {
				return err
			}
			if !slices.Contains(caps, c) {
				caps = append(caps, c)
			}
		}
	}
	if slices.ContainsFunc(drop, isAll) {
		caps = nil
	} else {
		for _, d := range drop {
			c, err := normaliseCap(d, known)
			if err != nil {
				return err
			}
			caps = slices.DeleteFunc(caps, func(x string) bool { return x == c })
		}
	}
	var amb []string
	for _, a := range ambient {
		c, err := normaliseCap(a, known)
		if err != nil {
			return err
		}
		amb = append(amb, c)
		// An ambient capability must also be permitted and inheritable.
		if !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	spec.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:  caps,
		Effective: caps,
		Permitted: caps,
		Ambient:   amb,
	}
	if len(amb) > 0 {
		spec.Process.Capabilities.Inheritable = amb
	}
	return nil
}

func isAll(s string) bool { return strings.EqualFold(s, "ALL") }

// setUser resolves the user the container runs as: the config's run_as_*,
// else the image's USER, looked up in the image's own /etc/passwd and
// /etc/group.
func setUser(spec *specs.Spec, in specInput) error {
	sc := in.cfg.GetLinux().GetSecurityContext()
	userSpec := in.image.User
	switch {
	case sc.GetRunAsUser() != nil:
		if sc.GetRunAsUser().GetValue() < 0 {
			return fmt.Errorf("security context: run_as_user %d is negative: %w", sc.GetRunAsUser().GetValue(), errdefs.ErrInvalidArgument)
		}
		userSpec = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10)
	case sc.GetRunAsUsername() != "":
		userSpec = sc.GetRunAsUsername()
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return fmt.Errorf("security context: run_as_group is set without run_as_user or run_as_username: %w", errdefs.ErrInvalidArgument)
	}
	// A group given with the user in the image ("uid:gid") stays unless
	// run_as_group overrides it.
	name, group, _ := strings.Cut(userSpec, ":")
	if sc.GetRunAsUser() != nil || sc.GetRunAsUsername() != "" {
		group = ""
		if _, imageGroup, ok := strings.Cut(in.image.User, ":"); ok && sc.GetRunAsGroup() == nil {
			group = imageGroup
		}
	}
	if sc.GetRunAsGroup() != nil {
		if sc.GetRunAsGroup().GetValue() < 0 {
			return fmt.Errorf("security context: run_as_group %d is negative: %w", sc.GetRunAsGroup().GetValue(), errdefs.ErrInvalidArgument)
		}
		group = strconv.FormatInt(sc.GetRunAsGroup().GetValue(), 10)
	}
	if name == "" {
		name = "0"
	}
	full := name
	if group != "" {
		full += ":" + group
	}
	passwd, err := securejoin.SecureJoin(in.rootfs, "/etc/passwd")
	if err != nil {
		return err
	}
	groupFile, err := securejoin.SecureJoin(in.rootfs, "/etc/group")
	if err != nil {
		return err
	}
	eu, err := user.GetExecUserPath(full, &user.ExecUser{Home: "/"}, passwd, groupFile)
	if err != nil {
		return fmt.Errorf("user %q not found in the image: %v: %w", full, err, errdefs.ErrInvalidArgument)
	}
	uid, gid := uint32(eu.Uid), uint32(eu.Gid)
	var gids []uint32
	// Merge (the default policy): the groups the image gives the user.
	strict := sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict ||
		in.podCfg.GetLinux().GetSecurityContext().GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict
	if !strict {
		for _, g := range eu.Sgids {
			gids = appendUnique(gids, uint32(g))
		}
	}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 {
			return fmt.Errorf("security context: supplemental group %d is negative: %w", g, errdefs.ErrInvalidArgument)
		}
		gids = appendUnique(gids, uint32(g))
	}
	spec.Process.User = specs.User{UID: uid, GID: gid, AdditionalGids: gids}
	if !slices.ContainsFunc(spec.Process.Env, func(e string) bool { return strings.HasPrefix(e, "HOME=") }) {
		spec.Process.Env = append(spec.Process.Env, "HOME="+eu.Home)
	}
	return nil
}

func appendUnique(s []uint32, v uint32) []uint32 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// setSeccomp applies the container's seccomp profile, falling back to the
// pod's. Unconfined (or nothing) means no filter, as in kubelet's contract.
func setSeccomp(spec *specs.Spec, in specInput) error {
	sc := in.cfg.GetLinux().GetSecurityContext()
	if sc.GetPrivileged() {
		return nil
	}
	profile := sc.GetSeccomp()
	if profile == nil {
		profile = in.podCfg.GetLinux().GetSecurityContext().GetSeccomp()
	}
	if profile == nil {
		// No profile at either level is unconfined: the zero profile type
		// would read as RuntimeDefault.
		return nil
	}
	switch profile.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		p, err := seccomp.GetDefaultProfile(spec)
		if err != nil {
			return fmt.Errorf("seccomp default profile: %w", err)
		}
		spec.Linux.Seccomp = p
	case runtimeapi.SecurityProfile_Localhost:
		path := profile.GetLocalhostRef()
		if !filepath.IsAbs(path) {
			return fmt.Errorf("seccomp: localhost profile %q is not an absolute path: %w", path, errdefs.ErrInvalidArgument)
		}
		body, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("seccomp: localhost profile: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		p, err := seccomp.LoadProfile(string(body), spec)
		if err != nil {
			return fmt.Errorf("seccomp: localhost profile %s does not parse: %v: %w", path, err, errdefs.ErrInvalidArgument)
		}
		spec.Linux.Seccomp = p
	}
	return nil
}

// refuseMACProfiles: this host has neither AppArmor nor SELinux. Asking for
// no confinement is fine; asking for a profile is refused, not ignored.
func refuseMACProfiles(sc *runtimeapi.LinuxContainerSecurityContext) error {
	if a := sc.GetApparmor(); a != nil {
		switch a.GetProfileType() {
		case runtimeapi.SecurityProfile_Unconfined:
		case runtimeapi.SecurityProfile_RuntimeDefault:
			// kubelet's default; without AppArmor in the kernel there is
			// nothing to confine with, as containerd treats it.
		default:
			if !apparmorEnabled() {
				return fmt.Errorf("apparmor profile %q requested but AppArmor is not enabled on this host: %w", a.GetLocalhostRef(), errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("apparmor profiles are not supported by berth: %w", errdefs.ErrInvalidArgument)
		}
	}
	if o := sc.GetSelinuxOptions(); o != nil && (o.GetUser() != "" || o.GetRole() != "" || o.GetType() != "" || o.GetLevel() != "") {
		return fmt.Errorf("selinux options %v requested but SELinux is not enabled on this host: %w", o, errdefs.ErrInvalidArgument)
	}
	return nil
}

func apparmorEnabled() bool {
	data, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.TrimSpace(string(data)) == "Y"
}

// Default masked and read-only paths, as containerd's.
var (
	defaultMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	defaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

func setMaskedPaths(spec *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext) {
	if sc.GetPrivileged() {
		return
	}
	spec.Linux.MaskedPaths = defaultMaskedPaths
	if m := sc.GetMaskedPaths(); m != nil {
		spec.Linux.MaskedPaths = m
	}
	spec.Linux.ReadonlyPaths = defaultReadonlyPaths
	if r := sc.GetReadonlyPaths(); r != nil {
		spec.Linux.ReadonlyPaths = r
	}
}

// HostSecurity says which security modules this host offers containers.
type HostSecurity struct {
	AppArmor bool `json:"apparmor"`
	SELinux  bool `json:"selinux"`
	Seccomp  bool `json:"seccomp"`
}

// DetectHostSecurity reads what the kernel offers. berth confines with
// seccomp; a profile for a module the host lacks is refused at create.
func DetectHostSecurity() HostSecurity {
	_, selinuxErr := os.Stat("/sys/fs/selinux/enforce")
	status, _ := os.ReadFile("/proc/self/status")
	return HostSecurity{
		AppArmor: apparmorEnabled(),
		SELinux:  selinuxErr == nil,
		Seccomp:  strings.Contains(string(status), "\nSeccomp:"),
	}
}
