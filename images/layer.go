package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/images/archive"
)

// layerPlan is one layer of an image to fetch and unpack.
type layerPlan struct {
	desc    v1.Descriptor // the compressed blob
	diffID  v1.Hash       // digest of the uncompressed tar
	chainID string        // identity of the layer with all below it
	parent  string        // chain ID of the layer below; "" for the bottom
}

func parseConfig(raw []byte) (ocispec.Image, error) {
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, withKind(fmt.Errorf("parse image config: %w", err), errdefs.ErrDataLoss)
	}
	return cfg, nil
}

// planLayers pairs the manifest's layer blobs with the config's diff IDs
// and computes chain IDs (image-spec config.md: ChainID(Ln) =
// sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
func planLayers(manifest *v1.Manifest, cfg ocispec.Image) ([]layerPlan, error) {
	if len(manifest.Layers) != len(cfg.RootFS.DiffIDs) {
		return nil, withKind(fmt.Errorf("the manifest has %d layers but the config lists %d", len(manifest.Layers), len(cfg.RootFS.DiffIDs)), errdefs.ErrDataLoss)
	}
	plans := make([]layerPlan, len(manifest.Layers))
	parent := ""
	for i, d := range manifest.Layers {
		diffID, err := parseDigest(cfg.RootFS.DiffIDs[i].String())
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if _, err := parseDigest(d.Digest.String()); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		chainID := diffID.String()
		if parent != "" {
			sum := sha256.Sum256([]byte(parent + " " + diffID.String()))
			chainID = "sha256:" + hex.EncodeToString(sum[:])
		}
		plans[i] = layerPlan{desc: d, diffID: diffID, chainID: chainID, parent: parent}
		parent = chainID
	}
	return plans, nil
}

// fetchLayers fetches and unpacks the layers, a few at a time. Layers are
// unpacked each into its own directory, so their order does not matter.
func (m *Manager) fetchLayers(ctx context.Context, p *progress, src *pullSource, plans []layerPlan) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.jobs)
	for _, plan := range plans {
		g.Go(func() error {
			// Keyed by chain ID: two images that share a layer, pulled at
			// once, fetch and unpack it once.
			_, err := m.layerFlights.do(gctx, plan.chainID, p, func(ctx context.Context, lp *progress) (*layerRecord, error) {
				return m.fetchLayer(ctx, lp, src, plan)
			})
			if err == nil {
				p.layerDone()
			}
			return err
		})
	}
	return g.Wait()
}

// fetchLayer downloads a layer blob and unpacks it in one pass: the bytes
// go to the blob store and, decompressed, to the unpacker at once. Neither
// is kept unless both digests check out at the end.
func (m *Manager) fetchLayer(ctx context.Context, p *progress, src *pullSource, plan layerPlan) (_ *layerRecord, retErr error) {
	m.beginPull()
	defer m.endPull()

	m.mu.RLock()
	done := m.layers[plan.chainID]
	m.mu.RUnlock()
	if done != nil {
		return done, nil // unpacked before, for another image
	}
	digest := plan.desc.Digest

	m.mu.Lock()
	dirNum := m.nextDir
	m.nextDir++
	m.mu.Unlock()
	layerDir := filepath.Join(m.layersDir(), strconv.Itoa(dirNum))
	if err := os.MkdirAll(filepath.Join(layerDir, "fs"), 0o755); err != nil {
		return nil, fmt.Errorf("layer %s: %w", digest, diskError(err))
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.RemoveAll(layerDir)
		}
	}()

	var raw io.ReadCloser
	var blob *blobWriter
	if m.blobs.has(digest) {
		f, err := m.blobs.open(digest)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", digest, err)
		}
		raw = f
	} else {
		what := fmt.Sprintf("fetch layer %s from %s", digest, src.endpoint.display)
		l, err := src.puller.Layer(ctx, src.repo.Digest(digest.String()))
		if err != nil {
			return nil, registryError(what, err)
		}
		if raw, err = l.Compressed(); err != nil {
			return nil, registryError(what, err)
		}
		if blob, err = m.blobs.writer(digest, plan.desc.Size); err != nil {
			raw.Close()
			return nil, fmt.Errorf("layer %s: %w", digest, err)
		}
		defer func() {
			if !committed {
				blob.discard()
			}
		}()
	}
	defer raw.Close()
	// Closing the body is what unblocks a read from a stalled registry.
	defer context.AfterFunc(ctx, func() { raw.Close() })()

	source := &sourceReader{r: io.LimitReader(raw, plan.desc.Size+1)}
	var in io.Reader = &progressReader{r: source, p: p}
	if blob != nil {
		in = io.TeeReader(in, blob)
	}
	if err := unpack(ctx, filepath.Join(layerDir, "fs"), in, plan); err != nil {
		return nil, layerError(ctx, src, plan, source, err)
	}
	if blob != nil {
		if err := blob.commit(); err != nil {
			return nil, fmt.Errorf("layer %s: %w", digest, err)
		}
	}
	if err := syncFS(layerDir); err != nil {
		return nil, fmt.Errorf("layer %s: %w", digest, diskError(err))
	}

	rec := &layerRecord{ChainID: plan.chainID, DiffID: plan.diffID.String(), Parent: plan.parent,
		Blob: digest.String(), BlobSize: plan.desc.Size, Dir: dirNum}
	m.mu.Lock()
	defer m.mu.Unlock()
	if done := m.layers[plan.chainID]; done != nil {
		return done, nil // another pull unpacked it meanwhile; ours goes
	}
	if err := m.layerTable.Put(plan.chainID, rec); err != nil {
		return nil, err
	}
	m.layers[plan.chainID] = rec
	m.usage.invalidate()
	committed = true
	return rec, nil
}

// unpack decompresses in (gzip, zstd or plain, told apart by their magic
// numbers as the media type is not always right), applies the tar to dir,
// and checks the diff ID. It reads in to the end, so the caller's digest
// covers the whole blob.
func unpack(ctx context.Context, dir string, in io.Reader, plan layerPlan) error {
	br := bufio.NewReaderSize(in, 64<<10)
	tarStream, closeStream, err := decompress(br)
	if err != nil {
		return err
	}
	defer closeStream()
	diff := sha256.New()
	tr := io.TeeReader(tarStream, diff)
	if _, err := archive.Apply(ctx, dir, tr); err != nil {
		return err
	}
	// The tar may end before its stream does (padding): hash all of it.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(diff.Sum(nil)); got != plan.diffID.String() {
		return withKind(fmt.Errorf("uncompressed content %s does not match the config's diff ID %s", got, plan.diffID), errdefs.ErrDataLoss)
	}
	return nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(4) // a short blob is simply not compressed
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// sourceReader remembers the error its source returned, to tell a registry
// that failed from a layer that is bad.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// layerError classifies a failed layer: the context's end, a full disk, a
// registry that failed, content that does not match its digest, or a layer
// that is malformed or hostile (the archive error names the entry).
func layerError(ctx context.Context, src *pullSource, plan layerPlan, source *sourceReader, err error) error {
	what := fmt.Sprintf("layer %s", plan.desc.Digest)
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%s: %w", what, diskError(err))
	case source.err != nil && isNetworkError(source.err):
		return unavailable(fmt.Sprintf("fetch %s from %s", what, src.endpoint.display), source.err)
	case source.err != nil:
		// go-containerregistry checks the digest as the blob ends.
		return withKind(fmt.Errorf("%s from %s: content does not match its digest: %w", what, src.endpoint.display, source.err), errdefs.ErrDataLoss)
	case errdefs.IsDataLoss(err):
		return fmt.Errorf("%s: %w", what, err)
	}
	return withKind(fmt.Errorf("%s: %w", what, err), errdefs.ErrDataLoss)
}

// syncFS flushes the file system holding dir: one syncfs instead of an
// fsync per unpacked file, before a record says the layer is whole.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
