package core

import (
	"context"
	"maps"
	"strconv"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/core/apierr"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// controlPlane adapts Server to prism.plugin.v1.PluginService.
type controlPlane struct {
	pluginv1.UnimplementedPluginServiceServer
	s *Server
}

func (c *controlPlane) GetInfo(context.Context, *pluginv1.GetInfoRequest) (*pluginv1.GetInfoResponse, error) {
	s := c.s
	cfg := s.Config()
	caps := map[string]string{
		"drain":  "true",
		"reload": "true",
		"tls":    strconv.FormatBool(cfg.TLS.Enabled),
		"mtls":   strconv.FormatBool(cfg.TLS.Enabled && cfg.TLS.ClientAuth == "require"),
	}
	if r, ok := s.plugin.(CapabilityReporter); ok {
		maps.Copy(caps, r.Capabilities())
	}
	goVersion, commit, builtAt, modified := buildInfo()
	return &pluginv1.GetInfoResponse{
		Name:         cfg.Plugin.Name,
		Version:      Version,
		Backend:      s.info.Backend,
		Services:     s.info.Services,
		Capabilities: caps,
		StartTime:    timestamppb.New(s.started),
		Build:        &pluginv1.BuildInfo{GoVersion: goVersion, Commit: commit, BuildTime: builtAt, Modified: modified},
		DevMode:      s.opts.DevMode,
	}, nil
}

func (c *controlPlane) GetMetrics(context.Context, *pluginv1.GetMetricsRequest) (*pluginv1.GetMetricsResponse, error) {
	text, contentType, err := metricsText(c.s.registry)
	if err != nil {
		return nil, err
	}
	return &pluginv1.GetMetricsResponse{ContentType: contentType, Text: text}, nil
}

func (c *controlPlane) Drain(ctx context.Context, req *pluginv1.DrainRequest) (*pluginv1.DrainResponse, error) {
	timeout := c.s.Config().ControlPlane.ShutdownGrace
	if req.GetTimeout() != nil {
		if err := req.GetTimeout().CheckValid(); err != nil || req.GetTimeout().AsDuration() < 0 {
			return nil, apierr.Invalid("timeout", "must be a non-negative duration")
		}
		timeout = req.GetTimeout().AsDuration()
	}
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	remaining := c.s.drain(waitCtx)
	return &pluginv1.DrainResponse{Drained: remaining == 0, InFlightRemaining: remaining}, nil
}

func (c *controlPlane) Reload(ctx context.Context, _ *pluginv1.ReloadRequest) (*pluginv1.ReloadResponse, error) {
	res, err := c.s.Reload(ctx)
	if err != nil {
		return nil, apierr.New(apierr.ErrFailedPrecondition, "%v", err)
	}
	return &pluginv1.ReloadResponse{Changed: res.Changed, RestartRequired: res.RestartRequired}, nil
}
