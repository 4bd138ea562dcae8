// Command prism-watcher is a development loop for one plugin: it watches the plugin's Go sources
// and its config file, reloads the running plugin when only the config changed, and rebuilds and
// swaps in a new process with no downtime when code changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// defaultPorts are the plugins' gRPC ports (DESIGN §1).
var defaultPorts = map[string]int{"postgres": 9090, "kafka": 9091, "redis": 9092}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "prism-watcher:", err)
		os.Exit(1)
	}
}

func run() error {
	plugin := flag.String("plugin", "", "plugin to run: postgres, kafka or redis")
	root := flag.String("root", ".", "module root (the folder holding go.mod)")
	configFile := flag.String("config", "", "plugin config file (default <plugin>/config.yaml); changes trigger Reload")
	dev := flag.Bool("dev", true, "run the plugin with --dev (embedded backend)")
	addr := flag.String("addr", "", "plugin gRPC address for health and control calls (default 127.0.0.1:<plugin port>)")
	debounce := flag.Duration("debounce", 300*time.Millisecond, "quiet time after the last change before acting")
	ready := flag.Duration("ready-timeout", 2*time.Minute, "how long a new process has to become SERVING")
	drain := flag.Duration("drain-timeout", 10*time.Second, "longest wait for the old process's in-flight calls")
	flag.Parse()

	port, ok := defaultPorts[*plugin]
	if !ok {
		return fmt.Errorf("--plugin must be postgres, kafka or redis, got %q", *plugin)
	}
	if *addr == "" {
		*addr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if *configFile == "" {
		*configFile = filepath.Join(*root, *plugin, "config.yaml")
	}
	absConfig, err := filepath.Abs(*configFile)
	if err != nil {
		return fmt.Errorf("resolve --config: %w", err)
	}
	args := []string{"--config", absConfig}
	if *dev {
		args = append(args, "--dev")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "prism-watcher")
	sup := NewSupervisor(Options{
		Plugin: *plugin, Root: *root, OutDir: filepath.Join(*root, "bin", ".watch"), Addr: *addr,
		Args: args, ReadyTimeout: *ready, DrainTimeout: *drain,
	}, log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := sup.Swap(ctx); err != nil {
		return fmt.Errorf("first start: %w", err)
	}
	defer sup.Stop(context.WithoutCancel(ctx))
	w, err := NewWatcher(WatchOptions{
		Sources:    []string{filepath.Join(*root, *plugin), filepath.Join(*root, "core"), filepath.Join(*root, "gen")},
		ConfigFile: absConfig,
		Debounce:   *debounce,
	})
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	log.Info("watching", "plugin", *plugin, "config", absConfig, "addr", *addr)
	return w.Run(ctx, func(c Change) {
		switch {
		case c.Code:
			if err := sup.Swap(ctx); err != nil {
				log.Error("rebuild failed; the running plugin is unchanged", "error", err)
			}
		case c.Config:
			if err := sup.Reload(ctx); err != nil {
				log.Error("reload failed; the running plugin keeps its config", "error", err)
			}
		}
	})
}
