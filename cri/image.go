package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/images"
)

// Images is the image store (images.Manager).
type Images interface {
	// Pull fetches ref and returns the image ID.
	Pull(ctx context.Context, ref string, auth *images.Auth) (string, error)
	// Get resolves an ID, ID prefix or name; unknown is ErrNotFound.
	Get(ref string) (*images.Image, error)
	// List returns all images, or the one filter names.
	List(filter string) ([]*images.Image, error)
	// Remove removes what ref names; unknown succeeds.
	Remove(ref string) error
	// FsUsage measures the image store and the containers' directory.
	FsUsage(ctx context.Context) (imageFs, containerFs images.FsUsage, err error)
}

// PullImage pulls an image with the credentials kubelet passes. The
// response's image_ref is the image ID, the value ImageStatus and the
// container RPCs report too (CRI v1.36 identifier consistency).
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image reference is required: %w", errdefs.ErrInvalidArgument)
	}
	id, err := s.opts.Images.Pull(ctx, ref, authOf(req.GetAuth()))
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

func authOf(a *runtimeapi.AuthConfig) *images.Auth {
	if a == nil {
		return nil
	}
	return &images.Auth{
		Username:      a.GetUsername(),
		Password:      a.GetPassword(),
		Auth:          a.GetAuth(),
		ServerAddress: a.GetServerAddress(),
		IdentityToken: a.GetIdentityToken(),
		RegistryToken: a.GetRegistryToken(),
	}
}

// ImageStatus reports one image. An image berth does not have is a
// response without an image, not an error (api.proto: "If the image is not
// present, returns a response with ImageStatusResponse.Image set to nil").
func (s *Server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image reference is required: %w", errdefs.ErrInvalidArgument)
	}
	img, err := s.opts.Images.Get(ref)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toCRIImage(img)}
	if req.GetVerbose() {
		info, err := imageInfo(img)
		if err != nil {
			return nil, err
		}
		resp.Info = info
	}
	return resp, nil
}

// imageInfo is the verbose status: crictl inspecti prints info["info"],
// which holds the image config as the registry served it.
func imageInfo(img *images.Image) (map[string]string, error) {
	info, err := json.Marshal(struct {
		ID             string          `json:"id"`
		ManifestDigest string          `json:"manifestDigest"`
		ChainIDs       []string        `json:"chainIDs"`
		ImageSpec      json.RawMessage `json:"imageSpec"`
	}{img.ID, img.ManifestDigest, img.ChainIDs, json.RawMessage(img.RawConfig)})
	if err != nil {
		return nil, fmt.Errorf("encode image info: %w", err)
	}
	return map[string]string{"info": string(info)}, nil
}

// ListImages lists images, all of them or the one the filter names.
func (s *Server) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	list, err := s.listImages(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListImagesResponse{Images: list}, nil
}

// StreamImages sends the filtered list in chunks, then ends.
func (s *Server) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	list, err := s.listImages(req.GetFilter())
	if err != nil {
		return err
	}
	for start := 0; start < len(list); start += streamChunk {
		end := min(start+streamChunk, len(list))
		if err := stream.Send(&runtimeapi.StreamImagesResponse{Images: list[start:end]}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) listImages(filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	imgs, err := s.opts.Images.List(filter.GetImage().GetImage())
	if err != nil {
		return nil, err
	}
	out := make([]*runtimeapi.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toCRIImage(img))
	}
	return out, nil
}

// RemoveImage removes what the reference names (see images.Manager.Remove);
// removing an image that is not there succeeds.
func (s *Server) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image reference is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.opts.Images.Remove(ref); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the disk use of the image store and of the
// containers' writable layers, measured on disk.
func (s *Server) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	imageFs, containerFs, err := s.opts.Images.FsUsage(ctx)
	if err != nil {
		return nil, fmt.Errorf("measure image file system: %w", err)
	}
	return &runtimeapi.ImageFsInfoResponse{
		ImageFilesystems:     []*runtimeapi.FilesystemUsage{toFsUsage(imageFs)},
		ContainerFilesystems: []*runtimeapi.FilesystemUsage{toFsUsage(containerFs)},
	}, nil
}

func toFsUsage(u images.FsUsage) *runtimeapi.FilesystemUsage {
	return &runtimeapi.FilesystemUsage{
		Timestamp:  u.Timestamp.UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: u.Path},
		UsedBytes:  &runtimeapi.UInt64Value{Value: u.UsedBytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: u.InodesUsed},
	}
}

func toCRIImage(img *images.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        uint64(img.Size),
		Pinned:      img.Pinned,
	}
	out.Uid, out.Username = imageUser(img.Config.Config.User)
	return out
}

// imageUser splits an image's USER ("1002", "www-data", "1003:1004",
// "www-data:1004") into what kubelet wants: the numeric uid if the user
// part is a number, else the user name. The group does not take part.
func imageUser(user string) (*runtimeapi.Int64Value, string) {
	if user == "" {
		return nil, ""
	}
	name, _, _ := strings.Cut(user, ":")
	if uid, err := strconv.ParseInt(name, 10, 64); err == nil {
		return &runtimeapi.Int64Value{Value: uid}, ""
	}
	return nil, name
}
