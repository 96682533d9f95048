package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
)

// PodIfName is the pod's interface on the configured network.
const PodIfName = "eth0"

// PortMapping is one host port of a pod, in the shape the portmap plugin's
// "portMappings" capability takes.
type PortMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"` // tcp, udp or sctp
	HostIP        string `json:"hostIP,omitempty"`
}

// DNS is the "dns" capability: the pod's resolver settings.
type DNS struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// Bandwidth is the "bandwidth" capability, in bits per second and bits.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// Attachment is one pod's connection to the network: what libcni needs for
// ADD and, rebuilt from the pod record, for DEL.
type Attachment struct {
	PodID     string
	Name      string
	Namespace string
	UID       string
	// NetNS is the pinned network namespace file.
	NetNS        string
	PortMappings []PortMapping
	DNS          *DNS
	Bandwidth    *Bandwidth
}

// Result is what Setup made.
type Result struct {
	// Network is the name of the network list the pod is attached to;
	// Teardown uses it to find the configuration cached at ADD.
	Network string
	// IPs are the pod's addresses, IPv4 first (kubelet takes the first as
	// the pod IP).
	IPs []net.IP
}

func (a Attachment) runtimeConf(ifName string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: a.PodID,
		NetNS:       usableNetNS(a.NetNS),
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", a.Namespace},
			{"K8S_POD_NAME", a.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", a.PodID},
			{"K8S_POD_UID", a.UID},
		},
		CapabilityArgs: map[string]any{},
	}
	// libcni passes each capability only to plugins declaring it.
	if len(a.PortMappings) > 0 {
		rt.CapabilityArgs["portMappings"] = a.PortMappings
	}
	if a.DNS != nil {
		rt.CapabilityArgs["dns"] = a.DNS
	}
	if a.Bandwidth != nil {
		rt.CapabilityArgs["bandwidth"] = a.Bandwidth
	}
	return rt
}

// usableNetNS returns path if it is a mounted network namespace, else "".
// After a reboot or a crash mid-teardown the pinned file is gone or is an
// empty file; the plugins then skip the in-namespace part of DEL and still
// release the IP and host-side rules, where a bad path would fail DEL and
// leak the IP (containerd/cri#948).
func usableNetNS(path string) string {
	if path == "" {
		return ""
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		return ""
	}
	return path
}

// Setup attaches the pod: loopback first, then the configured network on
// eth0. On failure it deletes what it added before returning the error.
func (m *Manager) Setup(ctx context.Context, a Attachment) (*Result, error) {
	list, err := m.load()
	if err != nil {
		return nil, err
	}
	lo, err := loopbackList()
	if err != nil {
		return nil, err
	}
	if _, err := m.cni.AddNetworkList(ctx, lo, a.runtimeConf("lo")); err != nil {
		m.delQuiet(ctx, lo, a.runtimeConf("lo"))
		return nil, fmt.Errorf("network %s: add: %w", lo.Name, err)
	}
	raw, err := m.cni.AddNetworkList(ctx, list, a.runtimeConf(PodIfName))
	if err != nil {
		// ADD may have run some plugins of the chain; DEL undoes them.
		m.delQuiet(ctx, list, a.runtimeConf(PodIfName))
		m.delQuiet(ctx, lo, a.runtimeConf("lo"))
		return nil, fmt.Errorf("network %s: add: %w", list.Name, err)
	}
	ips, err := podIPs(raw)
	if err != nil {
		m.delQuiet(ctx, list, a.runtimeConf(PodIfName))
		m.delQuiet(ctx, lo, a.runtimeConf("lo"))
		return nil, fmt.Errorf("network %s: %w", list.Name, err)
	}
	return &Result{Network: list.Name, IPs: ips}, nil
}

func (m *Manager) delQuiet(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	if err := m.del(ctx, list, rt); err != nil {
		m.log.Warn("CNI DEL after a failed ADD", "network", list.Name, "pod", rt.ContainerID, "error", err)
	}
}

// podIPs picks the addresses on interfaces inside the pod, IPv4 first.
func podIPs(raw types.Result) ([]net.IP, error) {
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		return nil, fmt.Errorf("convert result: %w", err)
	}
	var v4, v6 []net.IP
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) &&
			res.Interfaces[*ip.Interface].Sandbox == "" {
			continue // a host-side address (a gateway on the bridge)
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.To4())
		} else {
			v6 = append(v6, ip.Address.IP)
		}
	}
	return append(v4, v6...), nil
}

// Teardown detaches the pod. It uses the configuration cached at ADD, so a
// configuration edited since still releases what the old one allocated, and
// tolerates a missing namespace and a pod that was never attached. It is
// idempotent.
func (m *Manager) Teardown(ctx context.Context, a Attachment, network string) error {
	var errs []error
	rt := a.runtimeConf(PodIfName)
	list := m.cachedList(network, rt)
	if list == nil {
		current, err := m.load()
		if err != nil {
			// Nothing cached and nothing configured: no plugin ever ran
			// for this pod under a configuration we could name.
			m.log.Warn("CNI DEL skipped: no cached or current network config", "pod", a.PodID, "error", err)
		} else {
			list = current
		}
	}
	if list != nil {
		if err := m.del(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("network %s: delete: %w", list.Name, err))
		}
	}
	lo, err := loopbackList()
	if err != nil {
		return err
	}
	if err := m.del(ctx, lo, a.runtimeConf("lo")); err != nil {
		errs = append(errs, fmt.Errorf("network %s: delete: %w", lo.Name, err))
	}
	return errors.Join(errs...)
}

// cachedList returns the network list cached at ADD for this attachment,
// or nil.
func (m *Manager) cachedList(network string, rt *libcni.RuntimeConf) *libcni.NetworkConfigList {
	if network == "" {
		return nil
	}
	data, _, err := m.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: network}, rt)
	if err != nil || len(data) == 0 {
		return nil
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return nil
	}
	return list
}

// del runs DEL over the plugins that are installed. A plugin that is not
// installed never ran, so it holds nothing to release; leaving it in would
// make libcni stop at it and skip the plugins that did run (a conflist
// naming a missing plugin would otherwise leak the IP and the veth).
func (m *Manager) del(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	installed := *list
	installed.Plugins = slices.DeleteFunc(slices.Clone(list.Plugins), func(p *libcni.PluginConfig) bool {
		_, err := invoke.FindInPath(p.Network.Type, m.opts.BinDirs)
		return err != nil
	})
	return m.cni.DelNetworkList(ctx, &installed, rt)
}

// GC releases every cached attachment whose pod is not in live, then asks
// the configured network's plugins to collect what they hold for pods not in
// live (CNI 1.1 GC). Run at start, it cleans up after pods whose records a
// crash or a manual wipe lost.
func (m *Manager) GC(ctx context.Context, live []string) error {
	atts, err := m.cni.GetCachedAttachments("")
	if err != nil {
		return fmt.Errorf("read CNI cache: %w", err)
	}
	var errs []error
	var valid []types.GCAttachment
	for _, id := range live {
		valid = append(valid, types.GCAttachment{ContainerID: id, IfName: PodIfName})
	}
	for _, att := range atts {
		if slices.Contains(live, att.ContainerID) {
			continue
		}
		list, err := libcni.NetworkConfFromBytes(att.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("stale attachment %s/%s: cached config: %w", att.Network, att.ContainerID, err))
			continue
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    att.ContainerID,
			NetNS:          usableNetNS(att.NetNS),
			IfName:         att.IfName,
			Args:           att.CniArgs,
			CapabilityArgs: att.CapabilityArgs,
		}
		m.log.Info("releasing stale CNI attachment", "network", att.Network, "pod", att.ContainerID, "ifname", att.IfName)
		if err := m.del(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("stale attachment %s/%s: delete: %w", att.Network, att.ContainerID, err))
		}
	}
	if list, err := m.load(); err == nil {
		if err := m.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
			errs = append(errs, fmt.Errorf("network %s: gc: %w", list.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Attached reports whether libcni still records an attachment for podID
// (leak checks, verbose status).
func (m *Manager) Attached(podID string) (bool, error) {
	atts, err := m.cni.GetCachedAttachments(podID)
	if err != nil {
		return false, err
	}
	return len(atts) > 0, nil
}

// ParseProtocol lower-cases a CRI protocol name for the portmap plugin.
func ParseProtocol(p string) string { return strings.ToLower(p) }
