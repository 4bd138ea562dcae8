package core

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/prism-gateway/plugins/core/config"
)

// DevDataDirEnv overrides where --dev keeps embedded backend data (default .prism-dev/<plugin>).
const DevDataDirEnv = "PRISM_DEV_DATA_DIR"

// Run is a plugin binary's whole main: it parses flags, loads config, serves until SIGTERM or
// SIGINT (then drains), reloads on SIGHUP, and returns the process exit code.
func Run(args []string, p Plugin) int {
	return run(context.Background(), args, p, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, p Plugin, stdout, stderr io.Writer) int {
	info := p.Info()
	name := info.Name + "-plugin"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default $"+config.PathEnv+", else "+config.DefaultPath+" if present)")
	checkConfig := fs.Bool("check-config", false, "validate the config, print it with secrets redacted, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	devMode := fs.Bool("dev", false, "serve from an embedded backend (local development only)")
	healthProbe := fs.Bool("health-probe", false, "ask the running plugin's gRPC health service (on the configured port) and exit 0 if SERVING")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "%s: unexpected arguments: %s\n", name, strings.Join(fs.Args(), " "))
		return 2
	}
	if *showVersion {
		goVersion, commit, builtAt, _ := buildInfo()
		_, _ = fmt.Fprintf(stdout, "%s %s (commit %s, built %s, %s)\n", name, Version, orUnknown(commit), orUnknown(builtAt), goVersion)
		return 0
	}

	src := config.ResolveSource(*configPath, os.LookupEnv)
	cfg, err := config.Load(p.ConfigSchema(), src)
	if *checkConfig {
		if err != nil {
			return fail(stderr, name, err)
		}
		out, err := config.Render(cfg)
		if err != nil {
			return fail(stderr, name, err)
		}
		_, _ = stdout.Write(out)
		return 0
	}
	if err != nil {
		return fail(stderr, name, err)
	}
	if *healthProbe {
		if err := probeHealth(ctx, cfg); err != nil {
			return fail(stderr, name, err)
		}
		return 0
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	devDir := os.Getenv(DevDataDirEnv)
	if devDir == "" {
		devDir = ".prism-dev/" + info.Name
	}
	memLimit := applyMemoryLimit(os.DirFS("/"), os.LookupEnv)
	srv, err := New(ctx, p, Options{Source: src, Config: cfg, DevMode: *devMode, DevDataDir: devDir})
	if err != nil {
		return fail(stderr, name, err)
	}
	memLimit.log(srv.logger())

	// The SIGHUP loop is owned here: it ends with ctx and is waited for before Run returns.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var reloads sync.WaitGroup
	reloads.Add(1)
	go func() {
		defer reloads.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_, _ = srv.Reload(ctx)
			}
		}
	}()
	defer func() {
		signal.Stop(hup)
		stop()
		reloads.Wait()
	}()

	if err := srv.Serve(ctx); err != nil {
		return fail(stderr, name, err)
	}
	return 0
}

// fail prints a one-line reason and returns the exit code for a failed start.
func fail(stderr io.Writer, name string, err error) int {
	_, _ = fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(err))
	return 1
}

// oneLine joins a multi-line error (errors.Join) for a one-line exit reason.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
