package daemon

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStreamingServerLivesWithTheDaemon(t *testing.T) {
	cfg := testConfig(t)
	d, err := start(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rt := runtimeapi.NewRuntimeServiceClient(dial(t, cfg.Socket))
	resp, err := rt.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var url string
	if err := json.Unmarshal([]byte(resp.GetInfo()["streamingURL"]), &url); err != nil || !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("streaming URL %q (%v) in %v", url, err, resp.GetInfo())
	}
	// Listening already: an unknown token is a 404 from berth's server.
	got, err := http.Get(url + "/exec/none")
	if err != nil {
		t.Fatal(err)
	}
	got.Body.Close()
	if got.StatusCode != http.StatusNotFound {
		t.Fatalf("HTTP %d", got.StatusCode)
	}
	d.Stop()
	if _, err := http.Get(url + "/exec/none"); err == nil {
		t.Fatal("streaming server still serves after the daemon stopped")
	}
}

func TestStreamingServerFailuresFailTheStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.Streaming.Port = busy.Addr().(*net.TCPAddr).Port
	if _, err := start(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "streaming") {
		t.Fatalf("start on a busy streaming port: %v", err)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Fatal("a failed start left its socket")
	}
	cfg = testConfig(t)
	cfg.Streaming.TLSCert = filepath.Join(t.TempDir(), "missing.pem")
	cfg.Streaming.TLSKey = cfg.Streaming.TLSCert
	if _, err := start(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("start with a missing certificate: %v", err)
	}
}
