package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"chatcluster/protocol"
)

// ReadPos is what a sync reply says of the read positions of one
// conversation: the user's own, and in a direct conversation the other
// user's.
type ReadPos struct {
	Read     int64
	PeerRead int64
}

// Snapshot is what every client and the server showed at one checkpoint:
// with the workload paused and every client settled at the latest of each
// of its conversations (after a fault, and at the end of the run).
type Snapshot struct {
	Name string
	// Views: per client, per conversation it is in, the final state of
	// every message it shows (View.Final).
	Views map[string]map[string]map[int64]State
	// Server: per client, per conversation, the server's answer to that
	// client's sync from the conversation's floor (ServerState); a
	// conversation missing here is one the server left out.
	Server map[string]map[string]map[int64]State
	// Floors: per conversation, the seq at and below which nothing is
	// compared, the same for every member (Floors); 0 or missing: all.
	Floors map[string]int64
	// Reads: per client, per conversation, the read positions of that
	// sync.
	Reads map[string]map[string]ReadPos
	// AckedReads: per user, per conversation, the highest read position
	// acknowledged before the checkpoint (by any device of the user).
	AckedReads map[string]map[string]int64
	// Users: the user of each client (device); a client missing here is
	// its user's only one, named like the user.
	Users map[string]string
}

// devices returns the clients of user in the snapshot, sorted.
func (s Snapshot) devices(user string) []string {
	var out []string
	for _, c := range sortedMapKeys(s.Views) {
		if u, ok := s.Users[c]; ok && u == user || !ok && c == user {
			out = append(out, c)
		}
	}
	return out
}

// CheckpointResult is what the comparison of one Snapshot found.
type CheckpointResult struct {
	Name string
	// Skipped says why the checkpoint was not taken (the workload did not
	// pause, a client did not settle, the server did not answer); "" if
	// it was.
	Skipped string
	// Retaken: the first snapshot differed and a second one, after every
	// client settled again, was compared instead (something was stored
	// after the clients had settled: a late request).
	Retaken bool
	// Compared counts the (client, message) pairs compared: the clients'
	// views and the server's answers to each client, against the server's
	// answer to the first member.
	Compared int
	// Differs counts the pairs of those that differ: a message one side
	// shows and the other does not, or shows in another state.
	Differs int
	// ReadsChecked counts the read positions compared with the highest
	// acknowledged: the reader's own (read), and in a direct conversation
	// the other user's (peerRead).
	ReadsChecked int
	// ReadBack counts those lower than acknowledged: read positions that
	// went back.
	ReadBack int
	Problems []string // the first violations, described
	Unlisted int      // violations not in Problems
}

// OK reports whether the checkpoint found no violation.
func (c CheckpointResult) OK() bool { return c.Differs == 0 && c.ReadBack == 0 }

func (c *CheckpointResult) problem(format string, args ...any) {
	if len(c.Problems) >= maxProblems {
		c.Unlisted++
		return
	}
	c.Problems = append(c.Problems, c.Name+": "+fmt.Sprintf(format, args...))
}

// Floors returns, for each conversation of views (per client, per
// conversation, the final state of every message it shows), the floor of
// a checkpoint that compares about the newest window seqs of it: the
// highest seq of a message some member shows that is at least window
// below the highest any member shows, or 0 if there is none. The floor is
// common to every member, so that each is compared over the same seqs,
// and it is the seq of a message, as a sync's offset must be after the
// server lost Redis's data (any other offset there answers "rebuild").
// A client that lags behind the others by more than the window still
// differs: what it misses in the window is compared.
func Floors(views map[string]map[string]map[int64]State, window int64) map[string]int64 {
	seqs := map[string][]int64{}
	for _, convs := range views {
		for conv, states := range convs {
			seqs[conv] = append(seqs[conv], slices.Collect(maps.Keys(states))...)
		}
	}
	out := make(map[string]int64, len(seqs))
	for conv, list := range seqs {
		slices.Sort(list)
		out[conv] = 0
		if len(list) == 0 {
			continue
		}
		limit := list[len(list)-1] - window
		// The last seq at or below limit.
		if i, _ := slices.BinarySearch(list, limit+1); i > 0 {
			out[conv] = list[i-1]
		}
	}
	return out
}

// CompareSnapshot checks that, in every conversation, every member's final
// view and the server's answer to every member are the same as the
// server's answer to the first member (by name): the same messages at the
// same seqs, each with the same text, edited or not, or recalled; only
// the seqs above the conversation's floor (Snapshot.Floors) are compared.
// It also checks that no read position the server gives is lower than
// one acknowledged.
func CompareSnapshot(s Snapshot) CheckpointResult {
	res := CheckpointResult{Name: s.Name}
	members := map[string][]string{} // conv -> clients in it, sorted
	for _, user := range sortedMapKeys(s.Views) {
		for _, conv := range sortedMapKeys(s.Views[user]) {
			members[conv] = append(members[conv], user)
		}
	}
	for _, conv := range sortedMapKeys(members) {
		list := members[conv]
		ref, refUser := map[int64]State(nil), ""
		for _, u := range list {
			if st, ok := s.Server[u][conv]; ok {
				ref, refUser = st, u
				break
			}
		}
		if refUser == "" {
			res.Differs += len(list)
			res.problem("the server left %s out of the sync of every member (%s)", conv, strings.Join(list, ", "))
			continue
		}
		floor := s.Floors[conv]
		for _, u := range list {
			res.compare(conv, above(s.Views[u][conv], floor), above(ref, floor), func(seq int64, got, want string) {
				res.problem("%s shows %s seq %d as %s; the server has %s (as it answered %s)", u, conv, seq, got, want, refUser)
			})
			if u == refUser {
				continue
			}
			st, ok := s.Server[u][conv]
			if !ok {
				res.Differs++
				res.problem("the server left %s out of %s's sync", conv, u)
				continue
			}
			res.compare(conv, above(st, floor), above(ref, floor), func(seq int64, got, want string) {
				res.problem("the server answered %s that %s seq %d is %s, and %s that it is %s", u, conv, seq, got, refUser, want)
			})
		}
	}

	for _, user := range sortedMapKeys(s.AckedReads) {
		for _, conv := range sortedMapKeys(s.AckedReads[user]) {
			// The position is the user's: every device of the user
			// reads it back (read), and every device of the other user
			// of a direct conversation (peerRead).
			acked := s.AckedReads[user][conv]
			for _, c := range s.devices(user) {
				if pos, ok := s.Reads[c][conv]; ok {
					res.ReadsChecked++
					if pos.Read < acked {
						res.ReadBack++
						to := ""
						if c != user {
							to = " to " + c
						}
						res.problem("read position went back: the server gives %s's read of %s as %d%s; %d was acknowledged", user, conv, pos.Read, to, acked)
					}
				}
			}
			peer, ok := dmPeer(conv, user)
			if !ok {
				continue
			}
			for _, c := range s.devices(peer) {
				if pos, ok := s.Reads[c][conv]; ok {
					res.ReadsChecked++
					if pos.PeerRead < acked {
						res.ReadBack++
						res.problem("read position went back: the server gives %s's read of %s to %s (peerRead) as %d; %d was acknowledged", user, conv, c, pos.PeerRead, acked)
					}
				}
			}
		}
	}
	return res
}

// compare counts the seqs of got and want (either side) and calls differ
// for each where they differ.
func (c *CheckpointResult) compare(conv string, got, want map[int64]State, differ func(seq int64, got, want string)) {
	seqs := slices.Collect(maps.Keys(got))
	for seq := range want {
		if _, ok := got[seq]; !ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		c.Compared++
		g, gok := got[seq]
		w, wok := want[seq]
		if gok == wok && g == w {
			continue
		}
		c.Differs++
		differ(seq, describe(g, gok), describe(w, wok))
	}
}

// above returns the states of m above seq floor (m itself if floor is 0).
func above(m map[int64]State, floor int64) map[int64]State {
	if floor <= 0 {
		return m
	}
	out := make(map[int64]State, len(m))
	for seq, st := range m {
		if seq > floor {
			out[seq] = st
		}
	}
	return out
}

func describe(s State, ok bool) string {
	if !ok {
		return "no message"
	}
	return s.String()
}

// dmPeer returns the other user of direct conversation conv of user.
func dmPeer(conv, user string) (string, bool) {
	rest, ok := strings.CutPrefix(conv, protocol.DMPrefix)
	if !ok {
		return "", false
	}
	a, b, ok := strings.Cut(rest, ":")
	switch {
	case !ok || a == b:
		return "", false
	case a == user:
		return b, true
	case b == user:
		return a, true
	}
	return "", false
}

func sortedMapKeys[V any](m map[string]V) []string {
	out := slices.Collect(maps.Keys(m))
	sort.Strings(out)
	return out
}
