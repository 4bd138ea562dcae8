package core

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/prism-gateway/plugins/core/config"
)

// minScrubbedSecret is the shortest secret value scrubbed from free text.
const minScrubbedSecret = 8

// scrubber removes known secret values from text that leaves the process (logs, error messages),
// as a second line of defence behind the redacting config types.
type scrubber struct {
	replacer atomic.Pointer[strings.Replacer]
}

func (s *scrubber) update(secrets []string) {
	var pairs []string
	for _, secret := range secrets {
		// Short values (a dev password like "prism") would blank out ordinary words in every line;
		// they are still redacted by type wherever config prints them.
		if len(secret) >= minScrubbedSecret {
			pairs = append(pairs, secret, config.Redacted)
		}
	}
	s.replacer.Store(strings.NewReplacer(pairs...))
}

func (s *scrubber) scrub(text string) string {
	r := s.replacer.Load()
	if r == nil {
		return text
	}
	return r.Replace(text)
}

// newLogger builds the process logger: JSON (or text) on w, level from a LevelVar so Reload can
// change it live, and every string scrubbed of secrets.
func newLogger(w io.Writer, format string, level *slog.LevelVar, scrub *scrubber) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(&scrubHandler{next: h, scrub: scrub})
}

type scrubHandler struct {
	next  slog.Handler
	scrub *scrubber
}

func (h *scrubHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.scrub.scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.scrubAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *scrubHandler) scrubAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.scrub.scrub(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]any, 0, len(attrs))
		for _, ga := range attrs {
			out = append(out, h.scrubAttr(ga))
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, h.scrub.scrub(err.Error()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (h *scrubHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.scrubAttr(a)
	}
	return &scrubHandler{next: h.next.WithAttrs(clean), scrub: h.scrub}
}

func (h *scrubHandler) WithGroup(name string) slog.Handler {
	return &scrubHandler{next: h.next.WithGroup(name), scrub: h.scrub}
}

func levelOf(s string) slog.Level {
	l, _ := config.ParseLevel(s)
	return slog.Level(l)
}
