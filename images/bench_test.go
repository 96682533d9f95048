package images

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-runtime/berth/state"
)

// benchImage is a 5-layer image of about 100 MB (20 MB of content that
// does not compress per layer), pushed once to a local registry shared by
// the sub-benchmarks.
var benchImage struct {
	once  sync.Once
	reg   *testRegistry
	ref   string
	bytes int64
}

func setUpBenchImage(b *testing.B) {
	benchImage.once.Do(func() {
		// It serves until the benchmark binary exits: the image is built
		// once for every sub-benchmark and run.
		reg := startTestRegistry()
		var layers []v1.Layer
		for i := range 5 {
			layers = append(layers, bigLayer(b, 20<<20, byte(10+i)))
		}
		img := buildImage(b, imageSpec{oci: true, layers: layers})
		reg.push(b, "bench/big:1", img)
		for _, l := range layers {
			n, _ := l.Size()
			benchImage.bytes += n
		}
		benchImage.reg, benchImage.ref = reg, reg.host+"/bench/big:1"
	})
}

// BenchmarkPull measures pulling the image into an empty store (cold:
// download, verify, unpack, sync) and into one that has it (warm: resolve
// the tag and record the name), in bytes of compressed layers per second.
func BenchmarkPull(b *testing.B) {
	setUpBenchImage(b)
	log := slog.New(slog.DiscardHandler)

	b.Run("cold", func(b *testing.B) {
		b.SetBytes(benchImage.bytes)
		for b.Loop() {
			b.StopTimer()
			m, done := benchManager(b, log)
			b.StartTimer()
			if _, err := m.Pull(context.Background(), benchImage.ref, nil); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			done()
			b.StartTimer()
		}
	})

	b.Run("warm", func(b *testing.B) {
		m, done := benchManager(b, log)
		defer done()
		if _, err := m.Pull(context.Background(), benchImage.ref, nil); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(benchImage.bytes)
		for b.Loop() {
			if _, err := m.Pull(context.Background(), benchImage.ref, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchManager(b *testing.B, log *slog.Logger) (*Manager, func()) {
	root, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		b.Fatal(err)
	}
	store, err := state.Open(filepath.Join(root, "meta.db"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(Options{Root: root, Store: store, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Recover(context.Background()); err != nil {
		b.Fatal(err)
	}
	return m, func() {
		store.Close()
		if err := os.RemoveAll(root); err != nil {
			b.Error(fmt.Errorf("clean up %s: %w", root, err))
		}
	}
}
