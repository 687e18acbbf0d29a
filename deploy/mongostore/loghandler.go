package main

import (
	"context"
	"log/slog"
	"slices"
)

// lazyHandler passes records to h, keeping the attributes given to With
// aside until a record is actually logged. FerretDB makes a logger with
// the arguments of every SQL statement it runs (logger.With(args).Debug),
// and slog's text handler formats them in With, whatever the level: about
// a tenth of the store's CPU went to formatting documents nobody logged.
type lazyHandler struct {
	h     slog.Handler
	attrs []slog.Attr // not yet given to h
}

func (l *lazyHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	h := l.h
	if len(l.attrs) > 0 {
		h = h.WithAttrs(l.attrs)
	}
	return h.Handle(ctx, r)
}

func (l *lazyHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return l
	}
	return &lazyHandler{h: l.h, attrs: append(slices.Clip(l.attrs), attrs...)}
}

func (l *lazyHandler) WithGroup(name string) slog.Handler {
	// Attributes given before the group stay outside it.
	h := l.h
	if len(l.attrs) > 0 {
		h = h.WithAttrs(l.attrs)
	}
	return &lazyHandler{h: h.WithGroup(name)}
}
