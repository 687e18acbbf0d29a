package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"chatcluster/handler"
	"chatcluster/protocol"
)

// Replies made ready out of turn go out in the order of their requests.
func TestReplyOrder(t *testing.T) {
	var o replyOrder
	var out []string
	enqueue := func(b []byte) bool { out = append(out, string(b)); return true }
	o.send([]byte("a"), enqueue)
	first := o.hold()
	o.send([]byte("c"), enqueue)
	second := o.hold()
	o.send(nil, enqueue) // not encodable: its turn, nothing sent
	o.send([]byte("e"), enqueue)
	if !slices.Equal(out, []string{"a"}) {
		t.Fatalf("before any held reply is ready: %q", out)
	}
	o.fill(second, []byte("d"), enqueue)
	if !slices.Equal(out, []string{"a"}) {
		t.Fatalf("a later held reply ready first: %q", out)
	}
	o.fill(first, []byte("b"), enqueue)
	o.send([]byte("f"), enqueue)
	if want := []string{"a", "b", "c", "d", "e", "f"}; !slices.Equal(out, want) {
		t.Fatalf("sent %q, want %q", out, want)
	}
	if o.waiting != nil {
		t.Fatalf("%d places still held", len(o.waiting))
	}
}

// gatedReads is a read position store whose marks wait for release, and
// that records the seqs marked and how many marks ran at once.
type gatedReads struct {
	release chan struct{}
	marked  chan int64
	mu      sync.Mutex
	running int
	most    int
}

func (g *gatedReads) Mark(ctx context.Context, conv, user string, seq int64, check bool) (int64, bool, error) {
	g.mu.Lock()
	g.running++
	g.most = max(g.most, g.running)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
	}()
	g.marked <- seq
	select {
	case <-g.release:
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
	return seq, true, nil
}

func (g *gatedReads) Positions(context.Context, map[string][]string) (map[string]map[string]int64, error) {
	return nil, nil
}

// typedPushes records the typing pushes handed out.
type typedPushes struct{ typed chan string }

func (p typedPushes) ToUser(string, string, []byte)   {}
func (p typedPushes) Typing(conv, _ string, _ []byte) { p.typed <- conv }

// A read is marked aside: the typing and ping requests behind it are
// handled while its mark waits, and their replies still follow its own.
// A second read waits for the first.
func TestReadHandledAside(t *testing.T) {
	c, ws := wsPair(t, queueConfig())
	reads := &gatedReads{release: make(chan struct{}), marked: make(chan int64, 4)}
	pushes := typedPushes{typed: make(chan string, 4)}
	c.srv.handler = handler.New(handler.Deps{Reads: reads, Pushes: pushes, Now: func() int64 { return time.Now().UnixMilli() }})
	user := "ann"
	c.user.Store(&user)
	conv := protocol.DMConv("ann", "ben")
	ctx := context.Background()
	frame := func(action, id, data string) []byte {
		return fmt.Appendf(nil, `{"action":%q,"id":%q,"data":%s}`, action, id, data)
	}
	within := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(time.Minute):
			t.Fatalf("%s: not within a minute", what)
		}
	}
	await := func(what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { f(); close(done) }()
		within(what, done)
	}

	await("the first read handed aside", func() { c.handle(ctx, frame("read", "1", fmt.Sprintf(`{"conv":%q,"seq":5}`, conv))) })
	await("its mark started", func() { <-reads.marked })
	await("a typing handled while the read waits", func() {
		c.handle(ctx, frame("typing", "2", fmt.Sprintf(`{"conv":%q}`, conv)))
		if got := <-pushes.typed; got != conv {
			t.Errorf("typing pushed in %s, want %s", got, conv)
		}
	})
	await("a ping handled while the read waits", func() { c.handle(ctx, frame("ping", "3", `{}`)) })
	second := make(chan struct{})
	go func() {
		defer close(second)
		c.handle(ctx, frame("read", "4", fmt.Sprintf(`{"conv":%q,"seq":6}`, conv)))
	}()
	close(reads.release)
	within("the second read handed aside", second)
	await("the second mark", func() {
		if seq := <-reads.marked; seq != 6 {
			t.Errorf("second mark of seq %d, want 6", seq)
		}
	})

	_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
	var ids []string
	for range 4 {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after replies %v: %v", ids, err)
		}
		var r struct {
			ID   string `json:"id"`
			Code int    `json:"code"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Code != 0 {
			t.Fatalf("reply %s: %v", b, err)
		}
		ids = append(ids, r.ID)
	}
	if want := []string{"1", "2", "3", "4"}; !slices.Equal(ids, want) {
		t.Fatalf("replies in the order %v, want %v", ids, want)
	}
	reads.mu.Lock()
	defer reads.mu.Unlock()
	if reads.most != 1 {
		t.Fatalf("%d marks of one connection ran at once, want 1", reads.most)
	}
}
