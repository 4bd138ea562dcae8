package credentials

import "context"

// Static is the source of credentials written in config or the environment: they never change.
type Static struct {
	h *holder
}

// NewStatic returns a source that always yields creds.
func NewStatic(creds Credentials) *Static {
	s := &Static{h: newHolder()}
	s.h.set(creds, nil)
	return s
}

// Start implements Source; static credentials need nothing.
func (*Static) Start(context.Context) error { return nil }

// Stop implements Source.
func (*Static) Stop(context.Context) error { return nil }

// Current implements Source.
func (s *Static) Current() (Credentials, error) { return s.h.current() }

// Changes implements Source; the channel is never closed.
func (s *Static) Changes() <-chan struct{} { return s.h.changes() }

// Describe implements Source.
func (s *Static) Describe() Description { return s.h.describe(KindStatic, "") }

var _ Source = (*Static)(nil)
