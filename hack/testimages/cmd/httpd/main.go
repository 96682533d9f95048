// Command httpd is a tiny stand-in for the e2e-test-images/httpd server.
//
// critest's multi-container specs need a long-running process that serves
// HTTP on port 80 and writes a line containing "httpd" to its log; the real
// Apache image does that with its startup warnings on stderr. The binary is
// named httpd so the process comm matches the real one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("listen", ":80", "address to serve HTTP on")
	flag.Bool("DFOREGROUND", true, "accepted for compatibility with httpd-foreground; always in the foreground")
	flag.Parse()

	logger := log.New(os.Stderr, "", 0)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintln(w, "<html><body><h1>It works!</h1></body></html>")
		logger.Printf("%s - - [%s] \"%s %s %s\" 200", r.RemoteAddr, time.Now().Format("02/Jan/2006:15:04:05 -0700"), r.Method, r.URL.Path, r.Proto)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	// As PID 1 the kernel ignores SIGTERM unless we handle it; without this
	// every StopContainer would wait out its whole timeout.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGWINCH)
	defer stop()
	go func() {
		<-ctx.Done()
		logger.Printf("httpd: caught signal, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	logger.Printf("httpd (berth test image): listening on %s; resuming normal operations", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Printf("httpd: %v", err)
		os.Exit(1)
	}
}
