package chaos

import (
	"testing"

	"chatcluster/protocol"
)

func TestViewAccept(t *testing.T) {
	v := NewView()
	conv := protocol.DMConv("ann", "ben")
	v.Know(conv)
	if got := v.Offsets(); len(got) != 1 || got[conv] != 0 {
		t.Fatalf("offsets of a known conversation: %v", got)
	}
	m1 := dm("m1", "ann", "ben", "1", 1)
	m3 := dm("m3", "ann", "ben", "3", 3)
	other := dm("x", "ben", "ann", "9", 1)
	steps := []struct {
		m    protocol.Message
		want Verdict
		off  int64
	}{
		{m1, Shown, 1},
		{m1, Redelivered, 1},
		{other, Hidden, 1}, // another message at a seq held
		{m3, Shown, 3},     // over a gap
		{dm("m2", "ann", "ben", "2", 2), Hidden, 3}, // below the offset, nothing held there
	}
	for i, s := range steps {
		if got := v.Accept(s.m); got != s.want || v.Offset(conv) != s.off {
			t.Fatalf("step %d: %s, offset %d; want %s, %d", i, got, v.Offset(conv), s.want, s.off)
		}
	}
	held := v.Held(conv, 0)
	if len(held) != 2 || held[0].ID != "m1" || held[1].ID != "m3" {
		t.Fatalf("held %+v", held)
	}
	if last := v.Held(conv, 1); len(last) != 1 || last[0].ID != "m3" {
		t.Fatalf("newest held %+v", last)
	}
	if v.Held("dm:x:y", 0) != nil || v.Offset("dm:x:y") != 0 {
		t.Fatal("an unknown conversation holds something")
	}
	if c := v.Convs(); len(c) != 1 || c[0] != conv {
		t.Fatalf("convs %v", c)
	}
}
