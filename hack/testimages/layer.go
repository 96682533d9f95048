package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the timestamp of every file, config and history entry: a fixed
// value makes each build byte-identical, so a second push finds every blob
// already in the registry and image IDs stay the same from run to run.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// entry is one file system object of a layer. Paths are absolute inside the
// image ("/bin/sh"); they are written without the leading slash, as docker
// and buildkit write layers.
type entry struct {
	path     string
	typ      byte // tar.TypeDir, tar.TypeReg or tar.TypeLink
	mode     int64
	uid, gid int
	data     []byte
	link     string // target of a hard link (an image path)
}

// layerBuilder collects entries and writes them as a deterministic tar.
type layerBuilder struct {
	entries map[string]entry
}

func newLayer() *layerBuilder { return &layerBuilder{entries: map[string]entry{}} }

// dir adds a directory (and its missing parents, mode 0755).
func (l *layerBuilder) dir(p string, mode int64) {
	l.parents(p)
	l.entries[p] = entry{path: p, typ: tar.TypeDir, mode: mode}
}

// file adds a regular file owned by root.
func (l *layerBuilder) file(p string, mode int64, data []byte) {
	l.parents(p)
	l.entries[p] = entry{path: p, typ: tar.TypeReg, mode: mode, data: data}
}

// copyFile adds a regular file with the contents of a host file (symlinks
// followed) and the given mode.
func (l *layerBuilder) copyFile(p, hostPath string, mode int64) error {
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	l.file(p, mode, data)
	return nil
}

// hardlink adds p as a hard link to the already added regular file target.
func (l *layerBuilder) hardlink(p, target string) {
	l.parents(p)
	l.entries[p] = entry{path: p, typ: tar.TypeLink, link: target}
}

func (l *layerBuilder) parents(p string) {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		if _, ok := l.entries[d]; !ok {
			l.entries[d] = entry{path: d, typ: tar.TypeDir, mode: 0o755}
		}
	}
}

// tar writes directories and regular files sorted by path (so every
// directory precedes its contents), then links sorted by path: a hard link
// must follow its target ("/bin/[" sorts before "/bin/busybox").
func (l *layerBuilder) tar() ([]byte, error) {
	paths := make([]string, 0, len(l.entries))
	for p := range l.entries {
		paths = append(paths, p)
	}
	isLink := func(p string) bool { return l.entries[p].typ == tar.TypeLink }
	sort.Slice(paths, func(i, j int) bool {
		if li, lj := isLink(paths[i]), isLink(paths[j]); li != lj {
			return lj
		}
		return paths[i] < paths[j]
	})
	written := map[string]bool{}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		e := l.entries[p]
		name := strings.TrimPrefix(e.path, "/")
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     name,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			Uname:    "root",
			Gname:    "root",
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		switch e.typ {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeReg:
			hdr.Size = int64(len(e.data))
		case tar.TypeLink:
			target, ok := l.entries[e.link]
			if !ok || target.typ != tar.TypeReg {
				return nil, fmt.Errorf("hard link %s: target %s is not a regular file of this layer", e.path, e.link)
			}
			if !written[e.link] {
				return nil, fmt.Errorf("hard link %s would precede its target %s", e.path, e.link)
			}
			hdr.Linkname = strings.TrimPrefix(e.link, "/")
			hdr.Mode = target.mode
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
		written[p] = true
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// build turns the entries into an OCI layer (gzip, compressed once and
// cached so digesting and uploading do not compress again).
func (l *layerBuilder) build() (v1.Layer, error) {
	data, err := l.tar()
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}
