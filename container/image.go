package container

// ImageConfig is what a container takes from its image.
type ImageConfig struct {
	// ID is the image ID (config digest); Ref is the digest reference
	// kubelet reports (repo@sha256:…), Name the name it was asked for.
	ID   string
	Ref  string
	Name string

	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	User       string
	StopSignal string
	Volumes    []string
}
