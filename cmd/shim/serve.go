package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-runtime/berth/config"
	"github.com/berth-runtime/berth/daemon"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", config.DefaultPath, "configuration file (missing default file = embedded defaults)")
	socket := fs.String("socket", "", "unix socket to serve on (overrides config: socket)")
	root := fs.String("root", "", "persistent state directory (overrides config: root)")
	stateDir := fs.String("state", "", "volatile state directory (overrides config: state)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides config: log.level)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(*configPath, explicit)
	if err != nil {
		return err
	}
	if *socket != "" {
		cfg.Socket = *socket
	}
	if *root != "" {
		cfg.Root = *root
	}
	if *stateDir != "" {
		cfg.State = *stateDir
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("flags: %w", err)
	}

	log := newLogger(os.Stderr, cfg.Log)
	slog.SetDefault(log)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	d, err := daemon.Start(ctx, cfg, daemon.Options{Version: version, Logger: log})
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("signal received; stopping", "timeout", cfg.ShutdownTimeout.Duration)
		d.Stop()
		return nil
	case err := <-d.Done():
		d.Stop()
		return fmt.Errorf("gRPC server: %w", err)
	}
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated with the config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
