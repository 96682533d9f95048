package images

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	crierrors "k8s.io/cri-api/pkg/errors"
)

// kindError attaches sentinels to an error without changing its text, so
// the registry's own message reaches kubelet unaltered while errors.Is
// still finds errdefs kinds for cri/errors.go.
type kindError struct {
	err   error
	kinds []error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return append([]error{e.err}, e.kinds...) }

func withKind(err error, kinds ...error) error { return &kindError{err: err, kinds: kinds} }

// registryError classifies what a registry (or the way to it) answered to
// the operation what ("pull docker.io/library/busybox:1.36"). Errors
// kubelet must tell apart start with the cri-api sentinel it matches by
// prefix; the rest keep the registry's message with an errdefs kind.
func registryError(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var stall *stallError
	if errors.As(err, &stall) || errors.Is(err, crierrors.ErrRegistryUnavailable) {
		return err // already classified
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			return withKind(fmt.Errorf("%s: access denied: %w", what, err), errdefs.ErrPermissionDenied)
		case terr.StatusCode == http.StatusNotFound:
			return withKind(fmt.Errorf("%s: not found: %w", what, err), errdefs.ErrNotFound)
		case terr.StatusCode == http.StatusTooManyRequests || terr.StatusCode >= 500:
			return unavailable(what, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if isNetworkError(err) {
		return unavailable(what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// unavailable is the error of a registry that cannot be reached or is
// failing; its text starts with the sentinel kubelet matches.
func unavailable(what string, err error) error {
	return withKind(fmt.Errorf("%w: %s: %w", crierrors.ErrRegistryUnavailable, what, err), errdefs.ErrUnavailable)
}

// isNetworkError reports failures to reach or keep talking to a registry.
func isNetworkError(err error) bool {
	var (
		netErr  net.Error
		opErr   *net.OpError
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		recErr  tls.RecordHeaderError
	)
	return errors.As(err, &netErr) || errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.As(err, &certErr) || errors.As(err, &unknown) || errors.As(err, &recErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
