package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// counted is a value that counts how often it is formatted.
type counted struct{ n *int }

func (c counted) LogValue() slog.Value {
	*c.n++
	return slog.StringValue("formatted")
}

// Attributes given to With are formatted only when a record is logged, and
// then as the wrapped handler formats them.
func TestLazyHandler(t *testing.T) {
	var buf bytes.Buffer
	n := 0
	log := slog.New(&lazyHandler{h: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})})
	withArgs := log.With(slog.Any("args", counted{&n}))
	withArgs.Debug("not logged")
	if n != 0 || buf.Len() != 0 {
		t.Fatalf("a record below the level formatted its attributes %d times and wrote %q", n, buf.String())
	}
	withArgs.With("more", 1).WithGroup("g").Info("logged", "k", "v")
	if n != 1 {
		t.Fatalf("attributes formatted %d times for one record, want once", n)
	}
	if got := buf.String(); !strings.Contains(got, "args=formatted more=1 g.k=v") || !strings.Contains(got, "msg=logged") {
		t.Fatalf("logged %q", got)
	}
}
