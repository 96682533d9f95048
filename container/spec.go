package container

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
)

// specInput is everything a container's OCI spec is built from.
type specInput struct {
	id     string
	pod    *sandbox.Pod
	podCfg *runtimeapi.PodSandboxConfig
	cfg    *runtimeapi.ContainerConfig
	image  *ImageConfig
	// rootfs is the container's mounted overlay root.
	rootfs string
	// dir is the container's persistent directory (image volumes).
	dir string
	// imageVolumes are the host paths of the config's image mounts, by
	// mount index, already mounted read-only.
	imageVolumes map[int]string
	// systemd selects the systemd form of the cgroups path.
	systemd bool
	// cgroup2 is set on a cgroup v2 host (cgroup namespace per container).
	cgroup2 bool
	// hugetlb says whether the cgroup hierarchy in use can limit hugepages.
	hugetlb bool
	// cdi resolves CDI devices; nil injects none.
	cdi *cdiRegistry
}

// buildSpec builds the container's OCI runtime spec. It validates what it
// reads: every error it returns is InvalidArgument naming the field, and it
// has no side effects but reading the image's /etc/passwd and /etc/group
// and creating missing bind-mount sources (as kubelet expects).
func buildSpec(in specInput) (*specs.Spec, error) {
	args, err := commandLine(in.cfg, in.image)
	if err != nil {
		return nil, err
	}
	sc := in.cfg.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()

	spec := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: in.rootfs, Readonly: sc.GetReadonlyRootfs()},
		Process: &specs.Process{
			Terminal: in.cfg.GetTty(),
			Args:     args,
			Env:      mergeEnv(in.image.Env, in.cfg.GetEnvs()),
			Cwd:      workingDir(in.cfg, in.image),
		},
		Annotations: map[string]string{},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{
				// Deny every device, then allow the defaults (specconv adds
				// them) and the ones the config asks for.
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
	for k, v := range in.cfg.GetAnnotations() {
		spec.Annotations[k] = v
	}
	if err := setUser(spec, in); err != nil {
		return nil, err
	}
	if err := setCapabilities(spec, sc); err != nil {
		return nil, err
	}
	spec.Process.NoNewPrivileges = sc.GetNoNewPrivs()
	if err := setSeccomp(spec, in); err != nil {
		return nil, err
	}
	if err := refuseMACProfiles(sc); err != nil {
		return nil, err
	}
	setNamespaces(spec, in)
	spec.Linux.CgroupsPath = cgroupsPath(in)
	if err := setResources(spec, in.cfg.GetLinux().GetResources(), in.hugetlb); err != nil {
		return nil, err
	}
	if err := setMounts(spec, in); err != nil {
		return nil, err
	}
	if err := setDevices(spec, in.cfg.GetDevices(), privileged); err != nil {
		return nil, err
	}
	if in.cdi != nil {
		if err := in.cdi.inject(spec, in.cfg); err != nil {
			return nil, err
		}
	}
	// After the mounts (CDI's too): it idmaps the bind mounts among them.
	setUserNamespace(spec, in.pod)
	setMaskedPaths(spec, sc)
	if privileged {
		spec.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	}
	return spec, nil
}

// commandLine merges the image's entrypoint and cmd with the config's
// command and args the way kubelet and Docker define it.
func commandLine(cfg *runtimeapi.ContainerConfig, img *ImageConfig) ([]string, error) {
	command, args := cfg.GetCommand(), cfg.GetArgs()
	if len(command) == 0 {
		command = img.Entrypoint
		if len(args) == 0 {
			args = img.Cmd
		}
	}
	argv := append(slices.Clone(command), args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("container %q: no command: the config and the image give neither a command nor args: %w", cfg.GetMetadata().GetName(), errdefs.ErrInvalidArgument)
	}
	return argv, nil
}

// mergeEnv puts the image's environment first and lets the config's values
// win for the same name.
func mergeEnv(image []string, config []*runtimeapi.KeyValue) []string {
	env := slices.Clone(image)
	index := map[string]int{}
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		index[name] = i
	}
	for _, kv := range config {
		entry := kv.GetKey() + "=" + string(kv.GetValue())
		if i, ok := index[kv.GetKey()]; ok {
			env[i] = entry
			continue
		}
		index[kv.GetKey()] = len(env)
		env = append(env, entry)
	}
	if _, ok := index["PATH"]; !ok {
		// Images built FROM scratch may omit PATH; runtimes supply one.
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return env
}

func workingDir(cfg *runtimeapi.ContainerConfig, img *ImageConfig) string {
	if wd := cfg.GetWorkingDir(); wd != "" {
		return wd
	}
	if img.WorkingDir != "" {
		return img.WorkingDir
	}
	return "/"
}

// setNamespaces joins the pod's pinned namespaces and creates the
// container's own mount (and PID, unless shared) namespace.
func setNamespaces(spec *specs.Spec, in specInput) {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if in.pod.NetNS != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: in.pod.NetNS})
	}
	if in.pod.IPCNS != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: in.pod.IPCNS})
	}
	if in.pod.UTSNS != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace, Path: in.pod.UTSNS})
	}
	switch in.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() {
	case runtimeapi.NamespaceMode_NODE:
		// The host's PID namespace: nothing to join or create.
	case runtimeapi.NamespaceMode_POD:
		if p := in.pod.PIDNSPath(); p != "" {
			ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: p})
		} else if in.pod.PIDMode != sandbox.PIDHost {
			ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
		}
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if in.cgroup2 {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	spec.Linux.Namespaces = ns
}

// cgroupsPath places the container beneath the pod cgroup.
func cgroupsPath(in specInput) string {
	parent := in.pod.Cgroup.ContainerParent()
	if in.systemd {
		return parent + ":berth:" + in.id
	}
	return filepath.Join(parent, in.id)
}
