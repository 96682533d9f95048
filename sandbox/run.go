package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cni"
	"github.com/berth-runtime/berth/events"
)

var errNotFound = errdefs.ErrNotFound

// Run creates a pod sandbox from cfg and returns its ID once the pod is
// ready. Each step names itself in the error it returns. The record is
// written, in state creating, before any side effect, and on failure the
// same teardown as RemovePodSandbox undoes every step, so a failed run
// leaves no namespace, mount, veth, IP, cgroup, file or record; a crash
// mid-run is undone by Recover from that record.
func (m *Manager) Run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (id string, retErr error) {
	p, err := m.plan(cfg, handler)
	if err != nil {
		return "", err
	}
	sysctls := cfg.GetLinux().GetSysctls()
	if err := validateSysctls(sysctls, p.HostNetwork, p.HostIPC); err != nil {
		return "", err
	}
	unblock := m.opts.Hooks.BlockSync()
	defer unblock()
	if err := m.names.Reserve(p.Key, p.ID); err != nil {
		return "", fmt.Errorf("run pod %s: %w", p.Key, err)
	}
	unlock := m.lock(p.ID)
	defer unlock()
	m.ids.Add(p.ID)

	step := "record"
	defer func() {
		if retErr == nil {
			return
		}
		retErr = fmt.Errorf("run pod %s (%s): %s: %w", p.Key, p.ID, step, retErr)
		// A cancelled request must not stop the undo half-way.
		undoCtx := context.WithoutCancel(ctx)
		if err := m.teardown(undoCtx, p, true); err != nil {
			m.log.Error("undo of a failed RunPodSandbox left resources; they are retried at the next start", "pod", p.ID, "error", err)
			p.State = StateRemoving
			if err := m.save(p); err != nil {
				m.log.Error("record failed pod for retry", "pod", p.ID, "error", err)
			}
			return
		}
		if err := m.forget(p); err != nil {
			m.log.Error("forget failed pod", "pod", p.ID, "error", err)
		}
	}()
	// The write-ahead record: from here on, Recover knows this pod.
	if err := m.save(p); err != nil {
		return "", err
	}

	mark := func(s string) {
		step = s
		p.Step = s
	}

	mark("create pod cgroup")
	if err := createCgroup(p.Cgroup, podResources(cfg.GetLinux(), m.log)); err != nil {
		return "", err
	}

	mark("pin namespaces")
	var kinds []nsKind
	if !p.HostNetwork {
		kinds = append(kinds, nsNet)
	}
	if !p.HostIPC {
		kinds = append(kinds, nsIPC)
	}
	// UTS follows the network: a host-network pod has the node's hostname.
	if !p.HostNetwork {
		kinds = append(kinds, nsUTS)
	}
	var paths map[string]string
	if len(p.UIDMappings) > 0 {
		// The helper that creates the user namespace is the infra process
		// too when the pod shares a PID namespace (see userns.go).
		var in *infra
		paths, in, err = pinUserNamespaces(p.NSDir, kinds, p.Hostname, p.UIDMappings, p.GIDMappings,
			m.opts.InfraCommand, p.ID, p.PIDMode == PIDPod, p.Cgroup)
		if err != nil {
			return "", err
		}
		if in != nil {
			m.mu.Lock()
			m.infras[p.ID] = in
			m.mu.Unlock()
			p.InfraPID, p.InfraStart = in.pid, in.start
		}
	} else if paths, err = pinNamespaces(p.NSDir, kinds, p.Hostname); err != nil {
		return "", err
	}
	p.NetNS, p.IPCNS, p.UTSNS, p.UserNS = paths[nsNet.name], paths[nsIPC.name], paths[nsUTS.name], paths[nsUser.name]
	if err := m.save(p); err != nil {
		return "", err
	}

	mark("apply sysctls")
	rootUID := -1
	if len(p.UIDMappings) > 0 {
		rootUID = int(p.UIDMappings[0].HostID)
	}
	if err := applySysctls(sysctls, p.NetNS, p.IPCNS, rootUID); err != nil {
		return "", err
	}

	mark("write pod files")
	if err := m.writeFiles(p, cfg); err != nil {
		return "", err
	}

	if !p.HostNetwork {
		mark("set up pod network")
		// Recorded before ADD: a chain that fails half-way, or a crash
		// during ADD, still needs DEL.
		p.NetworkStarted = true
		if err := m.save(p); err != nil {
			return "", err
		}
		res, err := m.opts.Network.Setup(ctx, p.attachment())
		if err != nil {
			return "", err
		}
		p.Network = res.Network
		for _, ip := range res.IPs {
			p.IPs = append(p.IPs, ip.String())
		}
		if err := m.save(p); err != nil {
			return "", err
		}
		mark("write hosts")
		if err := writeHosts(p.HostsPath, p.Hostname, p.IPs, false); err != nil {
			return "", err
		}
	}

	if p.PIDMode == PIDPod && p.InfraPID == 0 {
		mark("start infra process")
		in, err := startInfra(m.opts.InfraCommand, p.ID, p.RunDir, map[string]string{
			nsNet.name: p.NetNS, nsIPC.name: p.IPCNS, nsUTS.name: p.UTSNS,
		}, p.Cgroup)
		if err != nil {
			return "", err
		}
		m.mu.Lock()
		m.infras[p.ID] = in
		m.mu.Unlock()
		p.InfraPID, p.InfraStart = in.pid, in.start
	}

	// The pod is complete but not yet listed (it is still creating): a
	// hook that refuses it leaves nothing behind.
	mark("run pod hooks")
	if err := m.opts.Hooks.RunPodSandbox(ctx, p.clone()); err != nil {
		return "", err
	}

	mark("record ready")
	p.State = StateReady
	p.Step = ""
	if err := m.save(p); err != nil {
		return "", err
	}
	m.log.Info("pod sandbox ready", "pod", p.ID, "name", p.Key, "ips", p.IPs)
	m.opts.Events.Publish(events.Event{Type: events.Created, PodID: p.ID})
	m.opts.Events.Publish(events.Event{Type: events.Started, PodID: p.ID})
	return p.ID, nil
}

// plan validates cfg and builds the record of the pod to be.
func (m *Manager) plan(cfg *runtimeapi.PodSandboxConfig, handler string) (*Pod, error) {
	md := cfg.GetMetadata()
	if md.GetName() == "" || md.GetNamespace() == "" || md.GetUid() == "" {
		return nil, fmt.Errorf("pod sandbox metadata needs name, namespace and uid: %w", errdefs.ErrInvalidArgument)
	}
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	// POD is the zero value of every NamespaceMode: only a UsernsOptions
	// that is present asks for a user namespace.
	uids, gids, err := usernsMappings(nsOpts)
	if err != nil {
		return nil, err
	}
	configJSON, err := protojson.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode pod config: %w", err)
	}
	p := &Pod{
		ID:             newID(),
		Key:            nameKey(md),
		Name:           md.GetName(),
		Namespace:      md.GetNamespace(),
		UID:            md.GetUid(),
		Attempt:        md.GetAttempt(),
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: handler,
		CreatedAt:      time.Now(),
		State:          StateCreating,
		HostNetwork:    nsOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		HostIPC:        nsOpts.GetIpc() == runtimeapi.NamespaceMode_NODE,
		Hostname:       cfg.GetHostname(),
		Config:         configJSON,
		UIDMappings:    uids,
		GIDMappings:    gids,
	}
	switch nsOpts.GetPid() {
	case runtimeapi.NamespaceMode_POD:
		p.PIDMode = PIDPod
	case runtimeapi.NamespaceMode_NODE:
		p.PIDMode = PIDHost
	case runtimeapi.NamespaceMode_CONTAINER:
		p.PIDMode = PIDContainer
	default:
		return nil, fmt.Errorf("pod PID namespace mode %s: %w", nsOpts.GetPid(), errdefs.ErrInvalidArgument)
	}
	if p.Hostname == "" || p.HostNetwork {
		if h, err := os.Hostname(); err == nil && p.Hostname == "" {
			p.Hostname = h
		}
	}
	m.paths(p)
	p.Cgroup, err = podCgroupRef(m.opts.CgroupDriver, cfg.GetLinux().GetCgroupParent(), p.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	for _, pm := range cfg.GetPortMappings() {
		if pm.GetHostPort() <= 0 {
			continue // only host ports need the portmap plugin
		}
		p.PortMappings = append(p.PortMappings, cni.PortMapping{
			HostPort:      pm.GetHostPort(),
			ContainerPort: pm.GetContainerPort(),
			Protocol:      strings.ToLower(pm.GetProtocol().String()),
			HostIP:        pm.GetHostIp(),
		})
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		p.DNS = &cni.DNS{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	bw, err := bandwidthFromAnnotations(cfg.GetAnnotations())
	if err != nil {
		return nil, err
	}
	p.Bandwidth = bw
	return p, nil
}

// writeFiles writes hostname, resolv.conf and hosts, and mounts /dev/shm.
func (m *Manager) writeFiles(p *Pod, cfg *runtimeapi.PodSandboxConfig) error {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(p.RunDir, 0o711); err != nil {
		return err
	}
	if err := writeHostname(p.HostnamePath, p.Hostname); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if err := writeResolvConf(p.ResolvConfPath, cfg.GetDnsConfig()); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := writeHosts(p.HostsPath, p.Hostname, nil, p.HostNetwork); err != nil {
		return fmt.Errorf("hosts: %w", err)
	}
	if p.ShmPath != "" {
		if err := mountShm(p.ShmPath, m.opts.ShmSize); err != nil {
			return fmt.Errorf("shm: %w", err)
		}
	}
	return nil
}

func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
