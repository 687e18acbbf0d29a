// Package flagenv gives command-line flags environment-variable
// equivalents: a flag's default comes from its variable when set, and a
// flag given on the command line wins. It also builds the zerolog logger
// the commands share.
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Set wraps a FlagSet, recording each flag's variable for the usage text.
type Set struct {
	*flag.FlagSet
	errs []error
}

// New returns a Set for the command name.
func New(name string) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &Set{FlagSet: fs}
}

// String defines a string flag backed by env.
func (s *Set) String(name, env, def, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return s.FlagSet.String(name, def, usage+" ($"+env+")")
}

// Duration defines a duration flag backed by env.
func (s *Set) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	if v, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("$%s=%q: %w", env, v, err))
		} else {
			def = d
		}
	}
	return s.FlagSet.Duration(name, def, usage+" ($"+env+")")
}

// Int defines an integer flag backed by env.
func (s *Set) Int(name, env string, def int, usage string) *int {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("$%s=%q is not a whole number", env, v))
		} else {
			def = n
		}
	}
	return s.FlagSet.Int(name, def, usage+" ($"+env+")")
}

// Parse parses args, reporting bad environment values first.
func (s *Set) Parse(args []string) error {
	if len(s.errs) > 0 {
		return s.errs[0]
	}
	return s.FlagSet.Parse(args)
}

// List splits a comma-separated list, dropping empty items.
func List(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Logger returns a JSON logger to w at the named level (debug, info, warn,
// error), with timestamps.
func Logger(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("unknown log level %q (debug, info, warn, error)", level)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Strings defines a flag that may be given several times, each time one
// value, backed by env, a comma-separated list that counts only when the
// flag is not given at all.
func (s *Set) Strings(name, env, usage string) *[]string {
	var vals []string
	if v, ok := os.LookupEnv(env); ok {
		vals = List(v)
	}
	given := false
	s.FlagSet.Func(name, usage+"; may be given several times ($"+env+", comma-separated)", func(v string) error {
		if !given {
			given, vals = true, nil
		}
		vals = append(vals, v)
		return nil
	})
	return &vals
}
