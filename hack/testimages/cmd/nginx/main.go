// Command nginx is a small stand-in for the nginx server in the
// e2e-test-images/nginx and k8s-staging-cri-tools/hostnet-nginx images.
//
// critest looks at nginx from outside, so this program copies what it sees:
//   - the process comm is "nginx" (the binary is installed as /usr/sbin/nginx;
//     the HostPID spec runs `pidof nginx`);
//   - /proc/PID/cmdline reads "nginx: master process ..." (the ContainerPID
//     spec greps PID 1's cmdline for "master process"); real nginx rewrites
//     its argv, we re-exec ourselves with that argv[0] instead;
//   - the master PID is written to /var/run/nginx.pid;
//   - GET / answers 200 on every `listen N;` port found in
//     /etc/nginx/conf.d/*.conf, port 80 when there is none (the hostnet image
//     ships a default.conf with `listen 12003;`, as upstream does).
//
// Built static (CGO_ENABLED=0) so it runs on the busybox base image.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	titlePrefix = "nginx: master process "
	pidFile     = "/var/run/nginx.pid"
	confGlob    = "/etc/nginx/conf.d/*.conf"
	htmlRoot    = "/usr/share/nginx/html"
)

const welcome = `<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>berth test image stand-in for nginx.</p>
</body>
</html>
`

func main() {
	logger := log.New(os.Stderr, "", log.LstdFlags)
	if !strings.HasPrefix(os.Args[0], titlePrefix) {
		retitle(logger)
	}

	ports, err := listenPorts()
	if err != nil {
		logger.Fatalf("nginx: [emerg] %v", err)
	}
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		logger.Fatalf("nginx: [emerg] open() %q failed: %v", pidFile, err)
	}
	defer os.Remove(pidFile)

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := []byte(welcome)
		if b, err := os.ReadFile(filepath.Join(htmlRoot, "index.html")); err == nil {
			body = b
		}
		w.Header().Set("Server", "nginx")
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(body)
		// Access log on stdout, like the official image's /var/log/nginx/access.log -> stdout.
		fmt.Printf("%s - - [%s] \"%s %s %s\" 200 %d\n", r.RemoteAddr, time.Now().Format("02/Jan/2006:15:04:05 -0700"), r.Method, r.URL.Path, r.Proto, len(body))
	})

	var servers []*http.Server
	var wg sync.WaitGroup
	for _, port := range ports {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			logger.Fatalf("nginx: [emerg] bind() to 0.0.0.0:%s failed: %v", port, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Printf("nginx: [alert] %v", err)
			}
		})
	}
	logger.Printf("nginx: [notice] start worker processes, listening on %s", strings.Join(ports, ","))

	// PID 1 gets no default signal handling: handle TERM/INT (fast) and
	// QUIT (graceful) ourselves so StopContainer does not hit its timeout.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	sig := <-sigs
	logger.Printf("nginx: [notice] signal %v received, exiting", sig)
	grace := time.Duration(0)
	if sig == syscall.SIGQUIT {
		grace = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
	wg.Wait()
}

// retitle re-executes the binary with argv[0] set to nginx's process title.
// It execs the real path (not /proc/self/exe) because the kernel takes comm
// from the executed file's name. The PID does not change.
func retitle(logger *log.Logger) {
	exe, err := os.Executable()
	if err != nil {
		// No /proc (a bare chroot): find ourselves the way the shell did.
		if exe, err = exec.LookPath(os.Args[0]); err != nil {
			logger.Fatalf("nginx: [emerg] cannot find own executable: %v", err)
		}
	}
	title := titlePrefix + strings.Join(os.Args, " ")
	if err := syscall.Exec(exe, []string{title}, os.Environ()); err != nil {
		logger.Fatalf("nginx: [emerg] re-exec %s: %v", exe, err)
	}
}

var listenRE = regexp.MustCompile(`(?m)^\s*listen\s+(?:[^;\s]*:)?(\d+)[^;]*;`)

// listenPorts returns the ports of every `listen` directive in the
// configuration, or 80 when there is none.
func listenPorts() ([]string, error) {
	files, err := filepath.Glob(confGlob)
	if err != nil {
		return nil, err
	}
	var ports []string
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range listenRE.FindAllSubmatch(data, -1) {
			if p := string(m[1]); !seen[p] {
				seen[p] = true
				ports = append(ports, p)
			}
		}
	}
	if len(ports) == 0 {
		ports = []string{"80"}
	}
	return ports, nil
}
