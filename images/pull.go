package images

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	crierrors "k8s.io/cri-api/pkg/errors"
)

// pullSource is where an image was found: the endpoint that answered and
// the digest its reference resolved to there.
type pullSource struct {
	endpoint endpoint
	repo     name.Repository
	puller   *remote.Puller
	digest   v1.Hash // of what the reference names: a manifest or an index
}

// pulledImage is the content of an image, stored and unpacked, before a
// record names it.
type pulledImage struct {
	id             string
	manifestDigest string
	blobs          []string
	chainIDs       []string
	size           int64
	config         ocispec.Image
	rawConfig      []byte
}

// Pull fetches the image ref names, stores and unpacks it, records ref as
// one of its names, and returns the image ID. Concurrent pulls of the same
// image share one download.
func (m *Manager) Pull(ctx context.Context, ref string, auth *Auth) (string, error) {
	r, err := parseReference(ref)
	if err != nil {
		return "", err
	}
	m.beginPull()
	defer m.endPull()

	start := time.Now()
	p := &progress{}
	ctx, stop := watch(withProgress(ctx, p), m.log, r.name(), p, m.timeout, m.logEvery)
	defer stop()

	src, err := m.resolve(ctx, r, auth)
	if err != nil {
		return "", pullError(ctx, r, err)
	}
	pulled, err := m.imageFlights.do(ctx, src.digest.String(), p, func(ctx context.Context, fp *progress) (*pulledImage, error) {
		return m.fetchImage(ctx, fp, src)
	})
	if err != nil {
		return "", pullError(ctx, r, err)
	}
	names := []string{r.digestName(src.digest.String())}
	if r.tag != "" {
		names = append([]string{r.name()}, names...)
	}
	if err := m.commitImage(pulled, names); err != nil {
		return "", fmt.Errorf("pull %s: %w", r, err)
	}
	m.log.Info("pulled image", "image", r.name(), "id", pulled.id, "from", src.endpoint.display,
		"bytes", p.layerBytes.Load(), "duration", time.Since(start).Round(time.Millisecond))
	return pulled.id, nil
}

// pullError gives a failed pull its final form: the watchdog's or the
// caller's reason when the context ended it, else err with the reference,
// keeping a cri-api sentinel first where there is one.
func pullError(ctx context.Context, r imageRef, err error) error {
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		var stall *stallError
		if errors.As(cause, &stall) {
			return cause
		}
		return fmt.Errorf("pull %s: %w", r, cause)
	}
	if errors.Is(err, crierrors.ErrRegistryUnavailable) || strings.Contains(err.Error(), r.name()) {
		return err
	}
	return fmt.Errorf("pull %s: %w", r, err)
}

// resolve asks each endpoint in turn (mirrors first) for the reference and
// returns the first that has it.
func (m *Manager) resolve(ctx context.Context, r imageRef, auth *Auth) (*pullSource, error) {
	var failures []string
	var lastErr error
	for _, e := range m.endpoints(r.domain) {
		src, err := m.resolveAt(ctx, r, e, auth)
		if err == nil {
			if len(failures) > 0 {
				m.log.Info("pulling from a later registry endpoint", "image", r.name(), "endpoint", e.display, "failed", strings.Join(failures, "; "))
			}
			return src, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errdefs.IsInvalidArgument(err) {
			return nil, err // the credentials or the name are wrong everywhere
		}
		m.log.Debug("registry endpoint failed", "image", r.name(), "endpoint", e.display, "error", err)
		failures = append(failures, fmt.Sprintf("%s: %v", e.display, err))
		lastErr = err
	}
	err := registryError("pull "+r.name(), lastErr)
	if len(failures) > 1 {
		// The registry's own answer leads (kubelet reads the start); what
		// the mirrors said follows.
		err = fmt.Errorf("%w (mirrors tried first: %s)", err, strings.Join(failures[:len(failures)-1], "; "))
	}
	return nil, err
}

func (m *Manager) resolveAt(ctx context.Context, r imageRef, e endpoint, auth *Auth) (*pullSource, error) {
	ref, err := e.reference(r)
	if err != nil {
		return nil, err
	}
	puller, err := m.puller(e, r.domain, auth)
	if err != nil {
		return nil, err
	}
	desc, err := puller.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	return &pullSource{endpoint: e, repo: ref.Context(), puller: puller, digest: desc.Digest}, nil
}

// fetchImage stores the manifest (and index), config and layers of the
// image src resolved to. It runs once per digest however many pulls want
// it, on a context of its own.
func (m *Manager) fetchImage(ctx context.Context, p *progress, src *pullSource) (*pulledImage, error) {
	m.beginPull()
	defer m.endPull()

	what := fmt.Sprintf("fetch %s@%s from %s", src.repo.RepositoryStr(), src.digest, src.endpoint.display)
	desc, err := src.puller.Get(ctx, src.repo.Digest(src.digest.String()))
	if err != nil {
		return nil, registryError(what, err)
	}
	var blobs []v1.Hash
	var img v1.Image
	switch {
	case desc.MediaType.IsIndex():
		if err := m.blobs.put(desc.Digest, desc.Manifest); err != nil {
			return nil, fmt.Errorf("%s: store index: %w", what, err)
		}
		blobs = append(blobs, desc.Digest)
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, registryError(what, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, withKind(fmt.Errorf("%s: parse index: %w", what, err), errdefs.ErrDataLoss)
		}
		child, err := pickPlatform(im, m.platform)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if img, err = idx.Image(child.Digest); err != nil {
			return nil, registryError(what, err)
		}
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return nil, registryError(what, err)
		}
	case desc.MediaType.IsSchema1():
		return nil, fmt.Errorf("%s: Docker schema 1 manifests are not supported; push the image again with a current client: %w", what, errdefs.ErrNotImplemented)
	default:
		return nil, fmt.Errorf("%s: %q is not an image manifest or index: %w", what, desc.MediaType, errdefs.ErrInvalidArgument)
	}

	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, registryError(what, err)
	}
	manifestDigest, err := img.Digest()
	if err != nil {
		return nil, registryError(what, err)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return nil, withKind(fmt.Errorf("%s: parse manifest: %w", what, err), errdefs.ErrDataLoss)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, registryError(what+": config", err)
	}
	if err := m.blobs.put(manifestDigest, rawManifest); err != nil {
		return nil, fmt.Errorf("%s: store manifest: %w", what, err)
	}
	if err := m.blobs.put(manifest.Config.Digest, rawConfig); err != nil {
		return nil, fmt.Errorf("%s: store config: %w", what, err)
	}
	blobs = append(blobs, manifestDigest, manifest.Config.Digest)

	cfg, err := parseConfig(rawConfig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	plans, err := planLayers(manifest, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	size := int64(len(rawManifest) + len(rawConfig))
	for _, l := range plans {
		size += l.desc.Size
	}
	p.setTotals(size-int64(len(rawManifest)+len(rawConfig)), int64(len(plans)))

	if err := m.fetchLayers(ctx, p, src, plans); err != nil {
		return nil, err
	}
	out := &pulledImage{
		id:             manifest.Config.Digest.String(),
		manifestDigest: manifestDigest.String(),
		size:           size,
		config:         cfg,
		rawConfig:      rawConfig,
	}
	for _, b := range blobs {
		out.blobs = append(out.blobs, b.String())
	}
	for _, l := range plans {
		out.chainIDs = append(out.chainIDs, l.chainID)
	}
	return out, nil
}

// pickPlatform chooses the manifest for platform from an index.
func pickPlatform(im *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, d := range im.Manifests {
		if d.Platform == nil || !d.MediaType.IsImage() {
			continue
		}
		p := d.Platform
		if p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == "" || p.Variant == want.Variant) {
			return d, nil
		}
		have = append(have, p.String())
	}
	return v1.Descriptor{}, fmt.Errorf("no image for %s in the index (it has %s): %w", want.String(), strings.Join(have, ", "), errdefs.ErrNotFound)
}

// commitImage records the pulled image under names. A name another image
// held moves to this one, as a tag pushed again does.
func (m *Manager) commitImage(p *pulledImage, names []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	img := m.images[p.id]
	next := &image{config: p.config, rawConfig: p.rawConfig, rec: imageRecord{
		ID: p.id, ManifestDigest: p.manifestDigest, Blobs: p.blobs, Layers: p.chainIDs, Size: p.size,
	}}
	if img != nil {
		// The same config pulled again, maybe through another manifest:
		// keep the content already recorded and add the names.
		next = &image{config: img.config, rawConfig: img.rawConfig, rec: img.rec}
		next.rec.RepoTags = slices.Clone(img.rec.RepoTags)
		next.rec.RepoDigests = slices.Clone(img.rec.RepoDigests)
	}
	losers := map[string]*image{}
	for _, n := range names {
		if holder, ok := m.names[n]; ok && holder != p.id {
			old := m.images[holder]
			if losers[holder] == nil {
				losers[holder] = &image{config: old.config, rawConfig: old.rawConfig, rec: old.rec}
			}
			l := losers[holder]
			l.rec.RepoTags = slices.DeleteFunc(slices.Clone(l.rec.RepoTags), func(s string) bool { return s == n })
			l.rec.RepoDigests = slices.DeleteFunc(slices.Clone(l.rec.RepoDigests), func(s string) bool { return s == n })
		}
		list := &next.rec.RepoTags
		if isDigestName(n) {
			list = &next.rec.RepoDigests
		}
		if !slices.Contains(*list, n) {
			*list = append(*list, n)
		}
	}
	next.rec.UpdatedAt = time.Now().UTC()
	// The new holder is written first: a crash before the old holder is
	// rewritten leaves both claiming the name, which Recover settles in
	// favour of the newer record.
	if err := m.imageTable.Put(next.rec.ID, &next.rec); err != nil {
		return err
	}
	for id, l := range losers {
		l.rec.UpdatedAt = time.Now().UTC()
		if err := m.imageTable.Put(id, &l.rec); err != nil {
			return err
		}
	}
	if img != nil {
		m.dropImageLocked(img)
	}
	for id, l := range losers {
		m.dropImageLocked(m.images[id])
		m.addImageLocked(l)
	}
	m.addImageLocked(next)
	m.usage.invalidate()
	return nil
}
