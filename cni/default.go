package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// DefaultFile is the name of the configuration berth writes when the
// configuration directory is empty. "10-" sorts it before most add-ons'
// files, which is harmless: load skips it whenever another file exists.
const DefaultFile = "10-berth.conflist"

// defaultMarker is a top-level key that tells berth's own default apart from
// an operator's file; CNI ignores unknown top-level keys.
const defaultMarker = "berthDefault"

// DefaultConfig describes the bridge network berth writes when there is no
// configuration.
type DefaultConfig struct {
	// Name is the CNI network name.
	Name string
	// Bridge is the Linux bridge the pods' veths attach to.
	Bridge string
	// Subnet is the host-local IPAM range; an IPv6 CIDR may follow, comma
	// separated, for dual stack.
	Subnet string
	// IPAMDir is where host-local keeps its allocations; empty means the
	// plugin's default (/var/lib/cni/networks). berth puts it under its
	// root, beside the attachment cache.
	IPAMDir string
}

// DefaultNetwork is the network of issue 4: bridge berth0 on 10.88.0.0/16.
func DefaultNetwork() DefaultConfig {
	return DefaultConfig{Name: "berth", Bridge: "berth0", Subnet: "10.88.0.0/16"}
}

// cniVersion is the spec version berth writes: 1.1.0 brings STATUS and GC,
// which the reference plugins v1.10 implement.
const cniVersion = "1.1.0"

// DefaultConflist renders the default configuration. The loopback plugin is
// not in the list: it works on "lo" only, whatever the interface name, so
// berth attaches it first as a network of its own for every pod (see
// loopbackList), which keeps operator-provided lists working too.
func DefaultConflist(d DefaultConfig) ([]byte, error) {
	var ranges [][]map[string]string
	for _, s := range splitComma(d.Subnet) {
		if _, _, err := net.ParseCIDR(s); err != nil {
			return nil, fmt.Errorf("default CNI subnet %q: %w", s, err)
		}
		ranges = append(ranges, []map[string]string{{"subnet": s}})
	}
	if len(ranges) == 0 {
		return nil, fmt.Errorf("default CNI network %s: no subnet", d.Name)
	}
	ipam := map[string]any{
		"type":   "host-local",
		"ranges": ranges,
		"routes": defaultRoutes(ranges),
	}
	if d.IPAMDir != "" {
		ipam["dataDir"] = d.IPAMDir
	}
	conf := map[string]any{
		"cniVersion":  cniVersion,
		"name":        d.Name,
		defaultMarker: true,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      d.Bridge,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam":        ipam,
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

func defaultRoutes(ranges [][]map[string]string) []map[string]string {
	var routes []map[string]string
	for _, r := range ranges {
		ip, _, _ := net.ParseCIDR(r[0]["subnet"])
		if ip.To4() != nil {
			routes = append(routes, map[string]string{"dst": "0.0.0.0/0"})
		} else {
			routes = append(routes, map[string]string{"dst": "::/0"})
		}
	}
	return routes
}

// writeDefault writes the default configuration atomically, so a concurrent
// reader sees either no file or the whole file.
func writeDefault(dir string, d DefaultConfig) (string, error) {
	data, err := DefaultConflist(d)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, DefaultFile)
	tmp, err := os.CreateTemp(dir, ".berth-default-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

func isDefault(list *libcni.NetworkConfigList) bool {
	var top map[string]any
	if err := json.Unmarshal(list.Bytes, &top); err != nil {
		return false
	}
	v, _ := top[defaultMarker].(bool)
	return v
}

// loopbackList is the network berth attaches first to every pod, on "lo".
// It is parsed anew each time because libcni calls may annotate the list.
func loopbackList() (*libcni.NetworkConfigList, error) {
	list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"` + cniVersion + `","name":"` + LoopbackNetwork + `","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		return nil, fmt.Errorf("loopback network config: %w", err)
	}
	return list, nil
}

// LoopbackNetwork is the name of the loopback attachment in libcni's cache.
const LoopbackNetwork = "cni-loopback"

func splitComma(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
