package main

import (
	"fmt"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// imagePATH is the PATH of the upstream busybox image.
const imagePATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// spec is one image critest v1.37.0 pulls on linux/amd64, pushed under its
// upstream repository path without the registry host: critest runs with
// registry.k8s.io, k8s.gcr.io and gcr.io mirrored to the local registry.
type spec struct {
	repo    string   // e.g. "e2e-test-images/busybox"
	tags    []string // every tag pushed for this very image
	helpers []string // programs under hack/testimages/cmd the image contains
	// why says what the specs need from the image.
	why   string
	build func(b *builder) (v1.Image, error)
}

// name is what -only matches besides the full repository: its last element.
func (s spec) name() string { return path.Base(s.repo) }

func (s spec) refs() []string {
	out := make([]string, len(s.tags))
	for i, t := range s.tags {
		out[i] = s.repo + ":" + t
	}
	return out
}

// matches reports whether an -only item selects the image: the short name
// ("busybox"), the repository, or one of its repository:tag references.
func (s spec) matches(item string) bool {
	if item == s.name() || item == s.repo {
		return true
	}
	for _, r := range s.refs() {
		if item == r {
			return true
		}
	}
	return false
}

// busyboxHelpers are the stand-ins every busybox-based image carries.
var busyboxHelpers = []string{"pgrep", "ipcs"}

func withHelpers(extra ...string) []string {
	return append(append([]string{}, busyboxHelpers...), extra...)
}

// specs lists every image, from cri-tools v1.37.0 pkg/validate and
// pkg/framework. Not built: test-image-digest@sha256:9700f9a2…, which is
// pinned to an upstream digest nobody can rebuild (its spec is skipped).
var specs = []spec{
	{
		repo: "e2e-test-images/busybox", tags: []string{"1.29-2"}, helpers: busyboxHelpers,
		why: "default test image: shell, coreutils applets, pgrep, ipcs, /etc/passwd users",
		build: func(b *builder) (v1.Image, error) {
			return b.busyboxBased(v1.Config{Cmd: []string{"sh"}})
		},
	},
	{
		repo: "e2e-test-images/nginx", tags: []string{"1.14-2"}, helpers: withHelpers("nginx"),
		why: "web server on :80, comm nginx, /var/run/nginx.pid, 'nginx: master process' cmdline",
		build: func(b *builder) (v1.Image, error) {
			return b.nginx(80)
		},
	},
	{
		repo: "k8s-staging-cri-tools/hostnet-nginx-amd64", tags: []string{"latest"}, helpers: withHelpers("nginx"),
		why: "host-network web server on :12003",
		build: func(b *builder) (v1.Image, error) {
			return b.nginx(12003)
		},
	},
	{
		repo: "e2e-test-images/httpd", tags: []string{"2.4.39-4"}, helpers: withHelpers("httpd"),
		why: "web server on :80 that logs a line containing httpd",
		build: func(b *builder) (v1.Image, error) {
			l := newLayer()
			if err := b.addHelper(l, "httpd", "/usr/local/apache2/bin/httpd", 0o755); err != nil {
				return nil, err
			}
			l.file("/usr/local/apache2/htdocs/index.html", 0o644, []byte("<html><body><h1>It works!</h1></body></html>\n"))
			return b.busyboxBased(v1.Config{
				Env:          []string{"PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				Cmd:          []string{"httpd", "-DFOREGROUND"},
				ExposedPorts: map[string]struct{}{"80/tcp": {}},
				WorkingDir:   "/usr/local/apache2",
			}, l)
		},
	},
	{
		repo: "e2e-test-images/nonewprivs", tags: []string{"1.3"}, helpers: withHelpers("nonewprivs"),
		why: "setuid-root /usr/local/bin/nnp printing 'Effective uid: N'",
		build: func(b *builder) (v1.Image, error) {
			l := newLayer()
			// 04755 root:root: the setuid bit is the point of the image.
			if err := b.addHelper(l, "nonewprivs", "/usr/local/bin/nnp", 0o4755); err != nil {
				return nil, err
			}
			return b.busyboxBased(v1.Config{Entrypoint: []string{"/usr/local/bin/nnp"}}, l)
		},
	},
	testImage("test-image-1", "latest", "test-image-1"),
	testImage("test-image-2", "latest", "test-image-2"),
	testImage("test-image-3", "latest", "test-image-3"),
	testImage("test-image-latest", "latest", "test-image-latest"),
	// One image under three tags, as upstream builds it.
	{
		repo: "k8s-staging-cri-tools/test-image-tags", tags: []string{"1", "2", "3"}, helpers: busyboxHelpers,
		why: "one image, three tags",
		build: func(b *builder) (v1.Image, error) {
			return b.markedImage("same-image")
		},
	},
	// test-image-tag:test and :all are two different images upstream.
	testImage("test-image-tag", "test", "test"),
	testImage("test-image-tag", "all", "all"),
	userImage("test-image-user-uid", "1002"),
	userImage("test-image-user-username", "www-data"),
	userImage("test-image-user-uid-group", "1003:1004"),
	userImage("test-image-user-username-group", "www-data:1004"),
	{
		repo: "k8s-staging-cri-tools/test-image-predefined-group", tags: []string{"latest"}, helpers: busyboxHelpers,
		why: "USER 1000 (default-user), member of group-defined-in-image (50000) in /etc/group",
		build: func(b *builder) (v1.Image, error) {
			// What `adduser -u 1000 -D default-user && addgroup -g 50000
			// group-defined-in-image && addgroup default-user
			// group-defined-in-image` leaves behind upstream.
			l := newLayer()
			l.file("/etc/passwd", 0o644, []byte(basePasswd+"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"))
			l.file("/etc/group", 0o644, []byte(baseGroup+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"))
			l.dir("/home/default-user", 0o755)
			e := l.entries["/home/default-user"]
			e.uid, e.gid = 1000, 1000
			l.entries["/home/default-user"] = e
			return b.busyboxBased(v1.Config{Cmd: []string{"sh"}, User: "1000"}, l)
		},
	},
	{
		repo: "pause", tags: []string{"3.9"}, helpers: []string{"pause"},
		why: "pulled as registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 (one image ID); runs as a container",
		build: func(b *builder) (v1.Image, error) {
			l := newLayer()
			if err := b.addHelper(l, "pause", "/pause", 0o755); err != nil {
				return nil, err
			}
			layer, err := l.build()
			if err != nil {
				return nil, err
			}
			return b.image(v1.Config{
				Env:        []string{imagePATH},
				Entrypoint: []string{"/pause"},
				User:       "65535:65535",
				WorkingDir: "/",
			}, []v1.Layer{layer}, []string{"pause " + "(hack/testimages/cmd/pause)"})
		},
	},
}

// testImage is upstream's images/image-test: busybox plus one empty file
// named after the image, so each one has its own ID.
func testImage(repo, tag, marker string) spec {
	return spec{
		repo: "k8s-staging-cri-tools/" + repo, tags: []string{tag}, helpers: busyboxHelpers,
		why: "busybox plus /" + marker + " (an image ID of its own)",
		build: func(b *builder) (v1.Image, error) {
			return b.markedImage(marker)
		},
	}
}

// userImage is upstream's images/image-user: busybox with a USER. No layer
// of its own; the config alone gives it a distinct ID.
func userImage(repo, user string) spec {
	return spec{
		repo: "k8s-staging-cri-tools/" + repo, tags: []string{"latest"}, helpers: busyboxHelpers,
		why: "busybox with USER " + user,
		build: func(b *builder) (v1.Image, error) {
			return b.busyboxBased(v1.Config{Cmd: []string{"sh"}, User: user})
		},
	}
}

func (b *builder) markedImage(marker string) (v1.Image, error) {
	l := newLayer()
	l.file("/"+marker, 0o644, nil)
	return b.busyboxBased(v1.Config{Cmd: []string{"sh"}}, l)
}

// nginx builds the nginx stand-in image listening on port. Port 80 needs no
// configuration; other ports get a conf.d/default.conf like upstream's
// hostnet-nginx image.
func (b *builder) nginx(port int) (v1.Image, error) {
	l := newLayer()
	if err := b.addHelper(l, "nginx", "/usr/sbin/nginx", 0o755); err != nil {
		return nil, err
	}
	l.dir("/etc/nginx/conf.d", 0o755)
	l.dir("/var/log/nginx", 0o755)
	l.file("/usr/share/nginx/html/index.html", 0o644, []byte("<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n"))
	if port != 80 {
		l.file("/etc/nginx/conf.d/default.conf", 0o644, fmt.Appendf(nil,
			"server {\n    listen       %d;\n    server_name  localhost;\n    location / {\n        root   /usr/share/nginx/html;\n        index  index.html index.htm;\n    }\n}\n", port))
	}
	return b.busyboxBased(v1.Config{
		Cmd:          []string{"nginx", "-g", "daemon off;"},
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", port): {}},
	}, l)
}

const basePasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`

const baseGroup = `root:x:0:
daemon:x:1:
www-data:x:33:
nobody:x:65534:
`

// nsswitch makes glibc's user and group lookups (busybox id -nu, whoami)
// read the files above and nothing else.
const nsswitch = `passwd: files
group: files
shadow: files
hosts: files dns
`

// describe lists the images for -list and the README.
func describe() string {
	var sb strings.Builder
	for _, s := range specs {
		fmt.Fprintf(&sb, "%-55s %s\n", strings.Join(s.refs(), " "), s.why)
	}
	return sb.String()
}
