package container

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// DefaultCDISpecDirs are where CDI specs are read from when the daemon's
// configuration names no directories (the CDI specification's defaults).
var DefaultCDISpecDirs = []string{"/etc/cdi", "/var/run/cdi"}

// cdiRegistry resolves Container Device Interface devices ("vendor.com/
// class=name") from the spec files of its directories into OCI spec edits:
// device nodes, environment, mounts and hooks.
type cdiRegistry struct {
	cache *cdi.Cache
}

// newCDIRegistry reads no file yet. Auto-refresh stays off: it would watch
// the directories with inotify for the life of the daemon, while reading
// them again only when a container asks for a device costs nothing to pods
// without devices and never serves a stale spec.
func newCDIRegistry(dirs []string) (*cdiRegistry, error) {
	if len(dirs) == 0 {
		dirs = DefaultCDISpecDirs
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("CDI spec dirs %v: %w", dirs, err)
	}
	return &cdiRegistry{cache: cache}, nil
}

// cdiDevices lists the devices a container asks for: the config's
// cdi_devices, then the ones named by cdi.k8s.io/* annotations (how device
// plugins asked before the field existed), each once, in that order.
func cdiDevices(cfg *runtimeapi.ContainerConfig) ([]string, error) {
	var out []string
	for _, d := range cfg.GetCDIDevices() {
		if d.GetName() == "" {
			return nil, fmt.Errorf("cdi_devices: empty device name: %w", errdefs.ErrInvalidArgument)
		}
		out = append(out, d.GetName())
	}
	_, annotated, err := cdi.ParseAnnotations(cfg.GetAnnotations())
	if err != nil {
		return nil, fmt.Errorf("CDI annotations: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	// ParseAnnotations walks a map: sort for a spec that is the same each
	// time.
	slices.Sort(annotated)
	for _, d := range annotated {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// inject applies the edits of every device the container asks for to
// spec. A device no spec file defines, or a malformed name, is
// InvalidArgument naming it.
func (r *cdiRegistry) inject(spec *specs.Spec, cfg *runtimeapi.ContainerConfig) error {
	devices, err := cdiDevices(cfg)
	if err != nil || len(devices) == 0 {
		return err
	}
	for _, d := range devices {
		if _, _, _, err := parser.ParseQualifiedName(d); err != nil {
			return fmt.Errorf("CDI device %q: %v: %w", d, err, errdefs.ErrInvalidArgument)
		}
	}
	// Read the directories again: a device plugin may have written its
	// spec just before kubelet created the container.
	// Errors of other spec files do not concern these devices; an
	// unresolved device is reported below, with them.
	_ = r.cache.Refresh()
	unresolved, err := r.cache.InjectDevices(spec, devices...)
	if len(unresolved) > 0 {
		return fmt.Errorf("CDI devices %s: not defined in the CDI specs of %s%s: %w",
			strings.Join(unresolved, ", "), strings.Join(r.cache.GetSpecDirectories(), ", "), specErrors(r.cache), errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("CDI devices %s: %v: %w", strings.Join(devices, ", "), err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// specErrors describes the spec files the cache could not load, which may
// be why a device is missing.
func specErrors(c *cdi.Cache) string {
	errs := c.GetErrors()
	if len(errs) == 0 {
		return ""
	}
	var parts []string
	for _, path := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s: %v", path, errs[path]))
	}
	return " (spec files that failed to load: " + strings.Join(parts, "; ") + ")"
}
