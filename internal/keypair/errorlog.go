package keypair

import (
	"bytes"
	"log"

	"github.com/rs/zerolog"
)

// ErrorLog is the error log of an http.Server on a TLS listener, so that
// what the server reports (chiefly handshakes that failed: a client that
// speaks plain HTTP, or does not trust the certificate) reaches the
// process's JSON log at level, as msg with the server's line as err,
// rather than standard error as text.
func ErrorLog(l zerolog.Logger, level zerolog.Level, msg string) *log.Logger {
	return log.New(lineWriter{l: l, level: level, msg: msg}, "", 0)
}

type lineWriter struct {
	l     zerolog.Logger
	level zerolog.Level
	msg   string
}

func (w lineWriter) Write(p []byte) (int, error) {
	w.l.WithLevel(w.level).Str("err", string(bytes.TrimSpace(p))).Msg(w.msg)
	return len(p), nil
}
