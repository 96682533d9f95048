package images

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// imageRef is an image reference normalised the way containerd and CRI-O
// do it (github.com/distribution/reference, the Docker rules): "busybox"
// is docker.io/library/busybox:latest.
type imageRef struct {
	repo   string // "docker.io/library/busybox"
	domain string // "docker.io": the registry host the config keys use
	path   string // "library/busybox": the repository on that registry
	tag    string // set unless the reference names a digest
	digest string // "sha256:…" when the reference names one
}

// parseReference normalises s. A reference that is not valid is
// ErrInvalidArgument naming it.
func parseReference(s string) (imageRef, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("invalid image reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	r := imageRef{
		repo:   named.Name(),
		domain: reference.Domain(named),
		path:   reference.Path(named),
	}
	if d, ok := named.(reference.Digested); ok {
		// "name:tag@sha256:…" pulls the digest and ignores the tag, as
		// containerd does: the registry never confirms that the tag points
		// at that digest, so recording it would claim what nobody checked.
		if d.Digest().Algorithm() != "sha256" {
			return imageRef{}, fmt.Errorf("image reference %q: only sha256 digests are supported: %w", s, errdefs.ErrInvalidArgument)
		}
		r.digest = d.Digest().String()
		return r, nil
	}
	r.tag = "latest"
	if t, ok := named.(reference.Tagged); ok {
		r.tag = t.Tag()
	}
	return r, nil
}

// name is the reference as it is recorded and looked up: repo:tag or
// repo@digest.
func (r imageRef) name() string {
	if r.digest != "" {
		return r.repo + "@" + r.digest
	}
	return r.repo + ":" + r.tag
}

// digestName is repo@digest for the given digest.
func (r imageRef) digestName(digest string) string { return r.repo + "@" + digest }

func (r imageRef) String() string { return r.name() }

// isDigestName reports whether a recorded name is a repo@digest one.
func isDigestName(name string) bool { return strings.Contains(name, "@") }
