// Package config loads berth's TOML configuration. The embedded default.toml is
// both the documentation printed by `shim config default` and the source of
// every default value, so the two can never disagree.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

//go:embed default.toml
var defaultFile string

// DefaultFile returns the commented default configuration file.
func DefaultFile() string { return defaultFile }

// DefaultPath is where the daemon looks for its configuration file.
const DefaultPath = "/etc/berth/config.toml"

// Config is the whole daemon configuration.
type Config struct {
	Socket          string              `toml:"socket" json:"socket"`
	Root            string              `toml:"root" json:"root"`
	State           string              `toml:"state" json:"state"`
	ShutdownTimeout Duration            `toml:"shutdown_timeout" json:"shutdown_timeout"`
	Log             Log                 `toml:"log" json:"log"`
	Cgroup          Cgroup              `toml:"cgroup" json:"cgroup"`
	CNI             CNI                 `toml:"cni" json:"cni"`
	Streaming       Streaming           `toml:"streaming" json:"streaming"`
	Images          Images              `toml:"images" json:"images"`
	CDI             CDI                 `toml:"cdi" json:"cdi"`
	NRI             NRI                 `toml:"nri" json:"nri"`
	Registries      map[string]Registry `toml:"registries" json:"registries"`
}

// Log configures the daemon's own log output.
type Log struct {
	Level  string `toml:"level" json:"level"`
	Format string `toml:"format" json:"format"`
}

// Cgroup selects the cgroup driver.
type Cgroup struct {
	Driver string `toml:"driver" json:"driver"`
}

// CNI locates network configuration and plugins.
type CNI struct {
	ConfDir string   `toml:"conf_dir" json:"conf_dir"`
	BinDirs []string `toml:"bin_dirs" json:"bin_dirs"`
}

// Streaming configures the exec/attach/port-forward server.
type Streaming struct {
	Address  string   `toml:"address" json:"address"`
	Port     int      `toml:"port" json:"port"`
	TokenTTL Duration `toml:"token_ttl" json:"token_ttl"`
	TLSCert  string   `toml:"tls_cert" json:"tls_cert"`
	TLSKey   string   `toml:"tls_key" json:"tls_key"`
}

// Images configures pulling.
type Images struct {
	PullProgressTimeout Duration `toml:"pull_progress_timeout" json:"pull_progress_timeout"`
}

// CDI locates Container Device Interface specs.
type CDI struct {
	SpecDirs []string `toml:"spec_dirs" json:"spec_dirs"`
}

// NRI configures Node Resource Interface plugins.
type NRI struct {
	Enable                    bool     `toml:"enable" json:"enable"`
	SocketPath                string   `toml:"socket_path" json:"socket_path"`
	PluginPath                string   `toml:"plugin_path" json:"plugin_path"`
	PluginConfigPath          string   `toml:"plugin_config_path" json:"plugin_config_path"`
	PluginRegistrationTimeout Duration `toml:"plugin_registration_timeout" json:"plugin_registration_timeout"`
	PluginRequestTimeout      Duration `toml:"plugin_request_timeout" json:"plugin_request_timeout"`
	DisableConnections        bool     `toml:"disable_connections" json:"disable_connections"`
}

// Registry holds the settings of one registry host.
type Registry struct {
	Mirrors  []string `toml:"mirrors" json:"mirrors"`
	Insecure bool     `toml:"insecure" json:"insecure"`
}

// Cgroup drivers.
const (
	DriverAuto     = "auto"
	DriverCgroupfs = "cgroupfs"
	DriverSystemd  = "systemd"
)

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the embedded defaults.
func Default() *Config {
	c, err := parse("")
	if err != nil {
		// The embedded file is tested; failing here is a build defect.
		panic(fmt.Sprintf("embedded default config: %v", err))
	}
	return c
}

// Load reads path over the defaults. A missing file yields the defaults,
// unless mustExist is set (the user named the file explicitly).
func Load(path string, mustExist bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !mustExist {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// parse decodes the defaults, then the user's document over them: decoding
// into a filled struct keeps every value the user's file does not mention.
func parse(user string) (*Config, error) {
	c := &Config{}
	if _, err := toml.Decode(defaultFile, c); err != nil {
		return nil, err
	}
	md, err := toml.Decode(user, c)
	if err != nil {
		return nil, err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every value and names the key of the first bad one.
func (c *Config) Validate() error {
	for key, p := range map[string]string{"socket": c.Socket, "root": c.Root, "state": c.State, "cni.conf_dir": c.CNI.ConfDir} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%s: %q is not an absolute path", key, p)
		}
	}
	for i, d := range c.CNI.BinDirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("cni.bin_dirs[%d]: %q is not an absolute path", i, d)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	if !slices.Contains([]string{DriverAuto, DriverCgroupfs, DriverSystemd}, c.Cgroup.Driver) {
		return fmt.Errorf("cgroup.driver: %q is not one of auto, cgroupfs, systemd", c.Cgroup.Driver)
	}
	if c.ShutdownTimeout.Duration <= 0 {
		return fmt.Errorf("shutdown_timeout: must be positive, got %s", c.ShutdownTimeout)
	}
	if net.ParseIP(c.Streaming.Address) == nil {
		return fmt.Errorf("streaming.address: %q is not an IP address", c.Streaming.Address)
	}
	if c.Streaming.Port < 0 || c.Streaming.Port > 65535 {
		return fmt.Errorf("streaming.port: %d is outside 0-65535", c.Streaming.Port)
	}
	if c.Streaming.TokenTTL.Duration <= 0 {
		return fmt.Errorf("streaming.token_ttl: must be positive, got %s", c.Streaming.TokenTTL)
	}
	if (c.Streaming.TLSCert == "") != (c.Streaming.TLSKey == "") {
		return errors.New("streaming.tls_cert and streaming.tls_key: give both or neither")
	}
	if c.Images.PullProgressTimeout.Duration <= 0 {
		return fmt.Errorf("images.pull_progress_timeout: must be positive, got %s", c.Images.PullProgressTimeout)
	}
	for key, p := range map[string]string{"nri.socket_path": c.NRI.SocketPath, "nri.plugin_path": c.NRI.PluginPath, "nri.plugin_config_path": c.NRI.PluginConfigPath} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%s: %q is not an absolute path", key, p)
		}
	}
	if c.NRI.PluginRegistrationTimeout.Duration <= 0 {
		return fmt.Errorf("nri.plugin_registration_timeout: must be positive, got %s", c.NRI.PluginRegistrationTimeout)
	}
	if c.NRI.PluginRequestTimeout.Duration <= 0 {
		return fmt.Errorf("nri.plugin_request_timeout: must be positive, got %s", c.NRI.PluginRequestTimeout)
	}
	if len(c.CDI.SpecDirs) == 0 {
		return errors.New("cdi.spec_dirs: name at least one directory")
	}
	for i, d := range c.CDI.SpecDirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("cdi.spec_dirs[%d]: %q is not an absolute path", i, d)
		}
		if slices.Contains(c.CDI.SpecDirs[:i], d) {
			return fmt.Errorf("cdi.spec_dirs[%d]: %q is listed twice", i, d)
		}
	}
	for host, r := range c.Registries {
		if host == "" || strings.ContainsAny(host, "/ ") {
			return fmt.Errorf("registries.%q: not a registry host", host)
		}
		for i, m := range r.Mirrors {
			u, err := url.Parse(m)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("registries.%q.mirrors[%d]: %q is not an http:// or https:// URL", host, i, m)
			}
		}
	}
	return nil
}

// CgroupDriver resolves "auto": systemd only when systemd runs the machine,
// since the systemd driver needs its D-Bus API.
func (c *Config) CgroupDriver() string {
	if c.Cgroup.Driver != DriverAuto {
		return c.Cgroup.Driver
	}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		return DriverSystemd
	}
	return DriverCgroupfs
}
