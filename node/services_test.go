package node

import (
	"testing"

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
