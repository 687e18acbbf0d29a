package accounts

import (
	"errors"
	"strings"
	"testing"
	"time"

	"chatcluster/protocol"
)

// A visitor's token logs it in, also after Redis lost the cache (it is
// found in MongoDB again); a wrong token does not; the name and channel are
// checked; one address makes at most the bound a minute.
func TestVisitors(t *testing.T) {
	e := newEnv(t)
	a := e.accounts(ThrottleConfig{})
	ctx := ctxT(t, 30*time.Second)

	v, tok, err := a.CreateVisitor(ctx, "  Vera  ", "", "127.0.0.9:5555", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !protocol.ValidVisitor(v.ID) || v.Name != "Vera" || v.Channel != "web" || !strings.HasPrefix(tok, protocol.VisitorTokenPrefix) {
		t.Fatalf("CreateVisitor = %+v, %q", v, tok)
	}
	anon, _, err := a.CreateVisitor(ctx, "", "app", "127.0.0.9:5555", 0)
	if err != nil || anon.Name != "Visitor "+strings.ToUpper(anon.ID[len(anon.ID)-4:]) || anon.ID == v.ID {
		t.Fatalf("a visitor without a name = %+v, %v", anon, err)
	}
	if id, err := a.TokenVisitor(ctx, tok); err != nil || id != v.ID {
		t.Fatalf("TokenVisitor = %q, %v; want %s", id, err, v.ID)
	}
	for _, bad := range []string{tok + "0", "vt_", "deadbeef"} {
		if _, err := a.TokenVisitor(ctx, bad); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("TokenVisitor(%q) = %v, want ErrBadCredentials", bad, err)
		}
	}
	// The token is never stored as it is.
	if keys, _ := e.rdb.Keys(ctx, e.prefix+"*"+tok[len(protocol.VisitorTokenPrefix):]+"*").Result(); len(keys) > 0 {
		t.Fatalf("Redis holds the token itself: %v", keys)
	}

	// Redis loses everything: the visitor still logs in, and its record
	// comes back.
	if keys, _ := e.rdb.Keys(ctx, e.prefix+"*").Result(); len(keys) > 0 {
		e.rdb.Del(ctx, keys...)
	}
	if id, err := a.TokenVisitor(ctx, tok); err != nil || id != v.ID {
		t.Fatalf("TokenVisitor after Redis lost the cache = %q, %v; want %s", id, err, v.ID)
	}
	if got, err := a.Visitor(ctx, anon.ID); err != nil || got.Name != anon.Name || got.Channel != "app" {
		t.Fatalf("Visitor after Redis lost the cache = %+v, %v", got, err)
	}
	if _, err := a.Visitor(ctx, "~nosuchvisitor"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("Visitor of an unknown id: %v", err)
	}

	for _, tc := range []struct{ name, channel string }{
		{strings.Repeat("x", protocol.MaxVisitorNameLen+1), "web"}, {"a\x07b", "web"}, {"ok", "Web"}, {"ok", "a b"},
		{"ok", strings.Repeat("a", protocol.MaxChannelLen+1)},
	} {
		if _, _, err := a.CreateVisitor(ctx, tc.name, tc.channel, "127.0.0.9:1", 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateVisitor(%q, %q) = %v, want ErrInvalid", tc.name, tc.channel, err)
		}
	}

	// Three a minute from one address (the minute may turn meanwhile:
	// then the count starts again, so up to six pass before a refusal).
	var limited *VisitorLimitError
	for i := 0; limited == nil; i++ {
		if i > 6 {
			t.Fatal("no refusal after 7 visitors from one address with a bound of 3 a minute")
		}
		_, _, err := a.CreateVisitor(ctx, "", "", "10.1.2.3:1000", 3)
		if err != nil && !errors.As(err, &limited) {
			t.Fatal(err)
		}
	}
	if limited.RetryAfter() < 1 || limited.RetryAfter() > 60 {
		t.Fatalf("retry after %d s", limited.RetryAfter())
	}
	if _, _, err := a.CreateVisitor(ctx, "", "", "10.1.2.4:1000", 3); err != nil {
		t.Fatalf("another address: %v", err)
	}
}
