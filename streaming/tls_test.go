package streaming

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (string, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "berth streaming test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

func TestTLS(t *testing.T) {
	certPath, keyPath, pool := selfSigned(t)
	cs := &fakeContainers{exec: catExec(4)}
	s := startServer(t, cs, &fakePods{}, func(o *Options) { o.TLSCert, o.TLSKey = certPath, keyPath })
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %q is not https", s.URL())
	}
	clientTLS := &tls.Config{RootCAs: pool}

	// Sessions run over TLS, with the exit code as over plain HTTP.
	e, err := s.GetExec(execRequest("c1", "cat"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialV5(t, e.GetUrl(), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	c.send(chanStdin, []byte("secret"))
	c.closeChannel(chanStdin)
	got := c.readAll()
	if string(got[chanStdout]) != "secret" || status(t, got[chanError]).exitCode() != 4 {
		t.Fatalf("over TLS: %q %q", got[chanStdout], got[chanError])
	}
	e, _ = s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"cat"}, Stdin: true, Stdout: true})
	conn, err := spdyConnect(t, e.GetUrl(), "v4.channel.k8s.io", clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	if out, _, st := spdyExec(t, conn, strings.NewReader("spdy"), true, false); out != "spdy" || st.exitCode() != 4 {
		t.Fatalf("SPDY over TLS: %q %+v", out, st)
	}

	// Plain HTTP on the TLS port gets nowhere near a container.
	calls := cs.calls()
	e, _ = s.GetExec(execRequest("c1", "cat"))
	resp, err := http.Get(strings.Replace(e.GetUrl(), "https://", "http://", 1))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: HTTP %d", resp.StatusCode)
		}
	}
	if cs.calls() != calls {
		t.Fatal("a plain HTTP request reached a container")
	}
}
