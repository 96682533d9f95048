// Package images is berth's image store: it pulls images from OCI
// registries with go-containerregistry, keeps their blobs in a
// content-addressed store, unpacks each layer once into a directory
// overlayfs can stack, and keeps image metadata in the state database.
//
// On disk, under <root>/images:
//
//	blobs/sha256/<hex>  manifests, indexes, configs and compressed layers, verified
//	ingest/             downloads in progress (emptied at start)
//	layers/<n>/fs       unpacked layers, keyed by ChainID in the database;
//	                    short numeric names keep overlay's lowerdir= short
//	trash/              layers being deleted (emptied at start)
//	empty/              the lower layer of an image that has none
//
// The database is the commit point: content is written and synced before a
// record names it, and records are removed before the content they name.
// Whatever the disk holds that no record names is a leftover of a pull or
// removal cut short, and Recover removes it.
package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-runtime/berth/state"
)

// Options configure a Manager.
type Options struct {
	// Root is berth's root directory: images live in Root/images and the
	// containers' writable layers in Root/containers.
	Root string
	// Store is the state database image metadata is kept in.
	Store *state.Store
	// Registries holds per-host settings, keyed by the registry host as it
	// appears in image references ("docker.io", "registry.k8s.io").
	Registries map[string]RegistryConfig
	// PullProgressTimeout cancels a pull that receives nothing for this
	// long. Zero means one minute.
	PullProgressTimeout time.Duration
	// ProgressLogInterval is how often a running pull logs its progress at
	// info level, the first time after one interval. Zero means 5s: long
	// enough that quick pulls stay quiet.
	ProgressLogInterval time.Duration
	// MaxConcurrentLayers bounds the layers one pull fetches at once. Zero
	// means 3, containerd's default.
	MaxConcurrentLayers int
	// Transport is the HTTP transport to registries; nil means one like
	// http.DefaultTransport. Tests pass one trusting their TLS registry.
	Transport http.RoundTripper
	// Platform is the image platform picked from multi-platform indexes;
	// zero means linux and the architecture berth was built for.
	Platform v1.Platform
	Logger   *slog.Logger
}

// Image is an image as callers see it.
type Image struct {
	// ID is the config digest, "sha256:…".
	ID string
	// RepoTags are the repo:tag names the image was pulled under.
	RepoTags []string
	// RepoDigests are the repo@digest names of the manifests (or indexes)
	// the image was pulled from.
	RepoDigests []string
	// Size is the bytes of its manifest, config and compressed layers.
	Size int64
	// ManifestDigest is the digest of the platform manifest.
	ManifestDigest string
	// Config is the OCI image configuration.
	Config ocispec.Image
	// RawConfig is the configuration exactly as the registry served it.
	RawConfig []byte
	// ChainIDs of the layers, bottom first.
	ChainIDs []string
	// Pinned images are never garbage collected by kubelet. berth has no
	// sandbox image of its own (pods are pinned namespaces), so none is.
	Pinned bool
}

// imageRecord is an image in the database.
type imageRecord struct {
	ID             string    `json:"id"`
	RepoTags       []string  `json:"repoTags,omitempty"`
	RepoDigests    []string  `json:"repoDigests,omitempty"`
	ManifestDigest string    `json:"manifestDigest"`
	Blobs          []string  `json:"blobs"`  // manifest, index (if any) and config
	Layers         []string  `json:"layers"` // chain IDs, bottom first
	Size           int64     `json:"size"`
	UpdatedAt      time.Time `json:"updatedAt"`
}

// layerRecord is an unpacked layer in the database, keyed by ChainID.
type layerRecord struct {
	ChainID  string `json:"chainID"`
	DiffID   string `json:"diffID"`
	Parent   string `json:"parent,omitempty"`
	Blob     string `json:"blob"` // the compressed blob it was unpacked from
	BlobSize int64  `json:"blobSize"`
	Dir      int    `json:"dir"` // layers/<Dir>/fs
}

// rootfsRecord says which layers a container's root file system uses.
type rootfsRecord struct {
	ContainerID string   `json:"containerID"`
	ImageID     string   `json:"imageID"`
	Layers      []string `json:"layers"`
}

// image is an image in memory.
type image struct {
	rec       imageRecord
	config    ocispec.Image
	rawConfig []byte
}

// Manager is the image store. Its methods are safe for concurrent use.
type Manager struct {
	log        *slog.Logger
	dir        string // <root>/images
	containers string // <root>/containers
	blobs      *blobStore
	registries map[string]RegistryConfig
	timeout    time.Duration
	logEvery   time.Duration
	jobs       int
	transport  http.RoundTripper
	platform   v1.Platform

	imageTable  *state.Table[imageRecord]
	layerTable  *state.Table[layerRecord]
	rootfsTable *state.Table[rootfsRecord]

	imageFlights flightGroup[*pulledImage]
	layerFlights flightGroup[*layerRecord]

	mu      sync.RWMutex
	images  map[string]*image       // by ID
	names   map[string]string       // repo:tag and repo@digest → ID
	ids     *state.IDIndex          // hex of IDs, for short IDs
	layers  map[string]*layerRecord // by chain ID
	rootfs  map[string]*rootfsRecord
	nextDir int
	// active counts pulls in progress. Garbage collection waits until it
	// is zero, because a pull writes content before any record names it.
	active    int
	gcPending bool

	usage usageCache
}

// New returns a manager; Recover loads its state before first use.
func New(opts Options) (*Manager, error) {
	if !filepath.IsAbs(opts.Root) {
		return nil, fmt.Errorf("images: root %q is not an absolute path", opts.Root)
	}
	if opts.Store == nil {
		return nil, errors.New("images: no state store")
	}
	for host, r := range opts.Registries {
		for i, m := range r.Mirrors {
			u, err := url.Parse(m)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
				return nil, fmt.Errorf("registries.%q.mirrors[%d]: %q must be http://host[:port] or https://host[:port]: the registry API lives at /v2/ of the host", host, i, m)
			}
		}
	}
	m := &Manager{
		log:        opts.Logger,
		dir:        filepath.Join(opts.Root, "images"),
		containers: filepath.Join(opts.Root, "containers"),
		registries: opts.Registries,
		timeout:    opts.PullProgressTimeout,
		logEvery:   opts.ProgressLogInterval,
		jobs:       opts.MaxConcurrentLayers,
		transport:  opts.Transport,
		platform:   opts.Platform,
		images:     map[string]*image{},
		names:      map[string]string{},
		ids:        state.NewIDIndex(),
		layers:     map[string]*layerRecord{},
		rootfs:     map[string]*rootfsRecord{},
		nextDir:    1,
	}
	m.blobs = newBlobStore(m.dir)
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.timeout <= 0 {
		m.timeout = time.Minute
	}
	if m.logEvery <= 0 {
		m.logEvery = 5 * time.Second
	}
	if m.jobs <= 0 {
		m.jobs = 3
	}
	if m.transport == nil {
		m.transport = remote.DefaultTransport.(*http.Transport).Clone()
	}
	if m.platform.OS == "" {
		m.platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		if runtime.GOARCH == "arm" {
			m.platform.Variant = "v7"
		}
	}
	var err error
	if m.imageTable, err = state.NewTable[imageRecord](opts.Store, "images"); err != nil {
		return nil, err
	}
	if m.layerTable, err = state.NewTable[layerRecord](opts.Store, "image_layers"); err != nil {
		return nil, err
	}
	if m.rootfsTable, err = state.NewTable[rootfsRecord](opts.Store, "image_rootfs"); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) layersDir() string     { return filepath.Join(m.dir, "layers") }
func (m *Manager) trashDir() string      { return filepath.Join(m.dir, "trash") }
func (m *Manager) emptyLayerDir() string { return filepath.Join(m.dir, "empty") }

// layerPath is the directory overlayfs stacks for a layer.
func (m *Manager) layerPath(dir int) string {
	return filepath.Join(m.layersDir(), strconv.Itoa(dir), "fs")
}

// ContainersDir is where the containers' writable layers belong; its usage
// is the container side of ImageFsInfo.
func (m *Manager) ContainersDir() string { return m.containers }

// addImageLocked indexes img under its ID and names.
func (m *Manager) addImageLocked(img *image) {
	m.images[img.rec.ID] = img
	m.ids.Add(strings.TrimPrefix(img.rec.ID, "sha256:"))
	for _, n := range img.names() {
		m.names[n] = img.rec.ID
	}
}

// dropImageLocked forgets img in memory.
func (m *Manager) dropImageLocked(img *image) {
	delete(m.images, img.rec.ID)
	m.ids.Delete(strings.TrimPrefix(img.rec.ID, "sha256:"))
	for _, n := range img.names() {
		if m.names[n] == img.rec.ID {
			delete(m.names, n)
		}
	}
}

func (img *image) names() []string {
	return append(slices.Clone(img.rec.RepoTags), img.rec.RepoDigests...)
}

// public is the caller's copy of img.
func (img *image) public() *Image {
	return &Image{
		ID:             img.rec.ID,
		RepoTags:       slices.Clone(img.rec.RepoTags),
		RepoDigests:    slices.Clone(img.rec.RepoDigests),
		Size:           img.rec.Size,
		ManifestDigest: img.rec.ManifestDigest,
		Config:         img.config,
		RawConfig:      img.rawConfig,
		ChainIDs:       slices.Clone(img.rec.Layers),
	}
}

// loadConfig reads and parses an image's config blob.
func (m *Manager) loadConfig(id string) (ocispec.Image, []byte, error) {
	h, err := parseDigest(id)
	if err != nil {
		return ocispec.Image{}, nil, err
	}
	raw, err := m.blobs.read(h)
	if err != nil {
		return ocispec.Image{}, nil, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return ocispec.Image{}, nil, fmt.Errorf("image config %s: %w", id, err)
	}
	return cfg, raw, nil
}

// beginPull and endPull bracket work that writes content no record names
// yet; garbage collection is held back while any is running.
func (m *Manager) beginPull() {
	m.mu.Lock()
	m.active++
	m.mu.Unlock()
}

func (m *Manager) endPull() {
	m.mu.Lock()
	m.active--
	var trash []string
	if m.active == 0 && m.gcPending {
		trash = m.collectGarbageLocked()
	}
	m.mu.Unlock()
	m.emptyTrash(trash)
}
