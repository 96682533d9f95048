package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"

	"github.com/berth-runtime/berth/images"
)

// fakeImages keeps images in memory, found by ID or any name.
type fakeImages struct {
	imgs     []*images.Image
	pullErr  error
	lastAuth *images.Auth
	removed  []string
}

func (f *fakeImages) find(ref string) *images.Image {
	for _, img := range f.imgs {
		if img.ID == ref || slices.Contains(img.RepoTags, ref) || slices.Contains(img.RepoDigests, ref) {
			return img
		}
	}
	return nil
}

func (f *fakeImages) Pull(ctx context.Context, ref string, auth *images.Auth) (string, error) {
	f.lastAuth = auth
	if f.pullErr != nil {
		return "", f.pullErr
	}
	if img := f.find(ref); img != nil {
		return img.ID, nil
	}
	return "", fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

func (f *fakeImages) Get(ref string) (*images.Image, error) {
	if img := f.find(ref); img != nil {
		return img, nil
	}
	return nil, fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

func (f *fakeImages) List(filter string) ([]*images.Image, error) {
	if filter == "" {
		return f.imgs, nil
	}
	if img := f.find(filter); img != nil {
		return []*images.Image{img}, nil
	}
	return nil, nil
}

func (f *fakeImages) Remove(ref string) error {
	f.removed = append(f.removed, ref)
	return nil
}

func (f *fakeImages) FsUsage(ctx context.Context) (images.FsUsage, images.FsUsage, error) {
	at := time.Unix(1700000000, 5)
	return images.FsUsage{Path: "/var/lib/berth/images", UsedBytes: 4096, InodesUsed: 3, Timestamp: at},
		images.FsUsage{Path: "/var/lib/berth/containers", UsedBytes: 512, InodesUsed: 1, Timestamp: at}, nil
}

func testImage(id, user string, tags ...string) *images.Image {
	raw := fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"User":%q,"Env":["PATH=/bin"]}}`, user)
	return &images.Image{
		ID: id, RepoTags: tags, RepoDigests: []string{"registry.k8s.io/x@sha256:" + strings.Repeat("d", 64)},
		Size: 1234, ManifestDigest: "sha256:" + strings.Repeat("d", 64),
		Config:    ocispec.Image{Config: ocispec.ImageConfig{User: user, Env: []string{"PATH=/bin"}}},
		RawConfig: []byte(raw), ChainIDs: []string{"sha256:" + strings.Repeat("c", 64)},
	}
}

func imageServer(f *fakeImages) *Server {
	s := NewServer(Options{Images: f})
	s.SetReady()
	return s
}

// code is the gRPC code an error reaches kubelet with.
func code(err error) codes.Code { return status.Code(toStatus(err)) }

func TestImageStatusOfUnknownImageIsEmpty(t *testing.T) {
	s := imageServer(&fakeImages{})
	resp, err := s.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "nothere:1"}, Verbose: true})
	if err != nil || resp.GetImage() != nil || len(resp.GetInfo()) != 0 {
		t.Fatalf("status of an unknown image: %v, %v; want an empty response and no error", resp, err)
	}
}

func TestImageStatusUserAndVerboseInfo(t *testing.T) {
	for _, tc := range []struct {
		user     string
		uid      *int64
		username string
	}{
		{"", nil, ""},
		{"1002", ptr(int64(1002)), ""},
		{"www-data", nil, "www-data"},
		{"1003:1004", ptr(int64(1003)), ""},
		{"www-data:1004", nil, "www-data"},
		{"0", ptr(int64(0)), ""},
	} {
		img := testImage("sha256:"+strings.Repeat("a", 64), tc.user, "registry.k8s.io/x:1")
		s := imageServer(&fakeImages{imgs: []*images.Image{img}})
		resp, err := s.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/x:1"}, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		got := resp.GetImage()
		if (tc.uid == nil) != (got.GetUid() == nil) || (tc.uid != nil && got.GetUid().GetValue() != *tc.uid) || got.GetUsername() != tc.username {
			t.Errorf("user %q: uid %v username %q", tc.user, got.GetUid(), got.GetUsername())
		}
		if got.GetId() != img.ID || got.GetSize() != 1234 || !slices.Equal(got.GetRepoTags(), img.RepoTags) || !slices.Equal(got.GetRepoDigests(), img.RepoDigests) {
			t.Errorf("image %v", got)
		}
		var info struct {
			ID        string          `json:"id"`
			ImageSpec json.RawMessage `json:"imageSpec"`
		}
		if err := json.Unmarshal([]byte(resp.GetInfo()["info"]), &info); err != nil {
			t.Fatalf("verbose info %q: %v", resp.GetInfo()["info"], err)
		}
		if info.ID != img.ID || string(info.ImageSpec) != string(img.RawConfig) {
			t.Errorf("verbose info carries %s, want the raw config", info.ImageSpec)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestPullImageReturnsTheImageIDAndPassesAuth(t *testing.T) {
	img := testImage("sha256:"+strings.Repeat("b", 64), "", "docker.io/library/busybox:1.36")
	f := &fakeImages{imgs: []*images.Image{img}}
	s := imageServer(f)
	resp, err := s.PullImage(context.Background(), &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1.36"},
		Auth: &runtimeapi.AuthConfig{Username: "u", Password: "p", Auth: "dTpw", ServerAddress: "docker.io",
			IdentityToken: "id", RegistryToken: "rt"},
	})
	if err != nil || resp.GetImageRef() != img.ID {
		t.Fatalf("pull: %v, %v; want image_ref = the image ID", resp, err)
	}
	want := images.Auth{Username: "u", Password: "p", Auth: "dTpw", ServerAddress: "docker.io", IdentityToken: "id", RegistryToken: "rt"}
	if f.lastAuth == nil || *f.lastAuth != want {
		t.Errorf("auth passed %+v, want %+v", f.lastAuth, want)
	}
	if _, err := s.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1.36"}}); err != nil || f.lastAuth != nil {
		t.Errorf("pull without auth: %v, auth %+v", err, f.lastAuth)
	}
}

func TestPullErrorsReachKubeletIntact(t *testing.T) {
	unavailable := fmt.Errorf("%w: pull registry.k8s.io/x:1: dial tcp: connection refused%w", crierrors.ErrRegistryUnavailable, silentKind{errdefs.ErrUnavailable})
	for _, tc := range []struct {
		err    error
		code   codes.Code
		prefix string
	}{
		{unavailable, codes.Unavailable, "RegistryUnavailable: pull registry.k8s.io/x:1: dial tcp"},
		{fmt.Errorf("pull x: not found: MANIFEST_UNKNOWN: %w", errdefs.ErrNotFound), codes.NotFound, "pull x: not found: MANIFEST_UNKNOWN"},
		{fmt.Errorf("invalid image reference %q: %w", "A B", errdefs.ErrInvalidArgument), codes.InvalidArgument, `invalid image reference "A B"`},
		{fmt.Errorf("pull x: access denied: UNAUTHORIZED: %w", errdefs.ErrPermissionDenied), codes.PermissionDenied, "pull x: access denied: UNAUTHORIZED"},
	} {
		s := imageServer(&fakeImages{pullErr: tc.err})
		_, err := s.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "x"}})
		st := status.Convert(toStatus(err))
		if st.Code() != tc.code || !strings.HasPrefix(st.Message(), tc.prefix) {
			t.Errorf("error %v reached kubelet as %v %q; want %v starting %q", tc.err, st.Code(), st.Message(), tc.code, tc.prefix)
		}
	}
}

// silentKind adds a kind to an error chain without adding text.
type silentKind struct{ kind error }

func (s silentKind) Error() string { return "" }
func (s silentKind) Unwrap() error { return s.kind }

func TestImageRPCsNeedAReference(t *testing.T) {
	s := imageServer(&fakeImages{})
	ctx := context.Background()
	_, err1 := s.PullImage(ctx, &runtimeapi.PullImageRequest{})
	_, err2 := s.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{}})
	_, err3 := s.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{})
	for i, err := range []error{err1, err2, err3} {
		if code(err) != codes.InvalidArgument {
			t.Errorf("call %d without an image: %v", i, err)
		}
	}
}

func TestRemoveImageDelegates(t *testing.T) {
	f := &fakeImages{}
	s := imageServer(f)
	if _, err := s.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "sha256:abc"}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.removed, []string{"sha256:abc"}) {
		t.Errorf("removed %v", f.removed)
	}
}

type imageStream struct {
	runtimeapi.ImageService_StreamImagesServer
	ctx  context.Context
	msgs []*runtimeapi.StreamImagesResponse
}

func (s *imageStream) Context() context.Context { return s.ctx }
func (s *imageStream) Send(r *runtimeapi.StreamImagesResponse) error {
	s.msgs = append(s.msgs, r)
	return nil
}

func TestListAndStreamImages(t *testing.T) {
	f := &fakeImages{}
	for i := range 250 {
		f.imgs = append(f.imgs, testImage(fmt.Sprintf("sha256:%064x", i), "", fmt.Sprintf("r/img:%d", i)))
	}
	s := imageServer(f)
	all, err := s.ListImages(context.Background(), &runtimeapi.ListImagesRequest{})
	if err != nil || len(all.GetImages()) != 250 {
		t.Fatalf("list: %d, %v", len(all.GetImages()), err)
	}
	one, err := s.ListImages(context.Background(), &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "r/img:7"}}})
	if err != nil || len(one.GetImages()) != 1 || one.GetImages()[0].GetRepoTags()[0] != "r/img:7" {
		t.Errorf("filtered list: %v, %v", one, err)
	}
	stream := &imageStream{ctx: context.Background()}
	if err := s.StreamImages(&runtimeapi.StreamImagesRequest{}, stream); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range stream.msgs {
		for _, img := range m.GetImages() {
			if seen[img.GetId()] {
				t.Errorf("image %s sent twice", img.GetId())
			}
			seen[img.GetId()] = true
		}
	}
	if len(seen) != 250 || len(stream.msgs) < 2 {
		t.Errorf("streamed %d images in %d messages", len(seen), len(stream.msgs))
	}
}

func TestImageFsInfoReportsBothFilesystems(t *testing.T) {
	s := imageServer(&fakeImages{})
	resp, err := s.ImageFsInfo(context.Background(), &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	img, ctr := resp.GetImageFilesystems(), resp.GetContainerFilesystems()
	if len(img) != 1 || len(ctr) != 1 {
		t.Fatalf("filesystems %v / %v", img, ctr)
	}
	if img[0].GetFsId().GetMountpoint() != "/var/lib/berth/images" || img[0].GetUsedBytes().GetValue() != 4096 ||
		img[0].GetInodesUsed().GetValue() != 3 || img[0].GetTimestamp() != time.Unix(1700000000, 5).UnixNano() {
		t.Errorf("image fs %v", img[0])
	}
	if ctr[0].GetFsId().GetMountpoint() != "/var/lib/berth/containers" || ctr[0].GetUsedBytes().GetValue() != 512 {
		t.Errorf("container fs %v", ctr[0])
	}
}
