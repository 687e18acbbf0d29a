package node

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"chatcluster/metrics"
	"chatcluster/protocol"
)

func seqs(from, to int64) []protocol.Message {
	var out []protocol.Message
	for s := from; s <= to; s++ {
		out = append(out, protocol.Message{Seq: s})
	}
	return out
}

func TestCovers(t *testing.T) {
	tests := []struct {
		name          string
		msgs          []protocol.Message
		after, before int64
		limit         int
		newest        bool
		want          bool
	}{
		{"newest page from the recent list", seqs(51, 100), 0, 0, 50, true, true},
		{"newest, short conversation", seqs(1, 7), 0, 0, 50, true, true},
		{"newest, fewer than limit and not from 1", seqs(60, 100), 0, 0, 50, true, false},
		{"older page below the recent list", nil, 0, 51, 50, true, false},
		{"older page, top present", seqs(30, 50), 0, 51, 20, true, true},
		{"older page, top missing", seqs(30, 49), 0, 51, 20, true, false},
		{"gap", append(seqs(1, 3), seqs(5, 6)...), 0, 0, 50, true, false},
		{"sync from an offset inside the window", seqs(91, 100), 90, 101, 1000, false, true},
		{"sync from an offset below the window", seqs(51, 100), 10, 101, 1000, false, false},
		{"sync reaching limit", seqs(11, 20), 10, 101, 10, false, true},
		{"sync missing the top", seqs(91, 99), 90, 101, 1000, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := covers(tc.msgs, tc.after, tc.before, tc.limit, tc.newest); got != tc.want {
				t.Fatalf("covers = %v, want %v", got, tc.want)
			}
		})
	}
}

// The hot words count room messages only, unless the operator asks for
// direct messages too: the ranking is public, direct messages private.
func TestHotWordsCountRoomsOnlyByDefault(t *testing.T) {
	for _, direct := range []bool{false, true} {
		s := &Server{m: metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{})}
		s.cfg.HotWordsDirect = direct
		w := &wordsSvc{s: s, queue: make(chan string, 4)}
		w.Count(protocol.Message{Conv: "room:lobby", Room: "lobby", Text: "room words"})
		w.Count(protocol.Message{Conv: "dm:a:b", To: "b", Text: "private words"})
		var got []string
		for len(w.queue) > 0 {
			got = append(got, <-w.queue)
		}
		want := []string{"room words"}
		if direct {
			want = append(want, "private words")
		}
		if !slices.Equal(got, want) {
			t.Errorf("HotWordsDirect %v: counted %q, want %q", direct, got, want)
		}
		if n := s.messagesIn.Load(); n != 2 {
			t.Errorf("HotWordsDirect %v: %d messages accepted, want 2", direct, n)
		}
	}
}
