package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"chatcluster/protocol"
)

// maxProblems bounds the violations listed in a Result (all are counted).
const maxProblems = 40

// Result is what the checker found in a record. See the package comment
// for the definitions.
type Result struct {
	Acked     int // acknowledged sends
	Expected  int // (acknowledged message, recipient client) pairs: every device of every recipient
	Delivered int // of those, the pairs whose recipient shows the message

	// Violations: each must be 0.
	Lost       int // pairs whose recipient never shows the message
	Duplicates int // messages shown again by a recipient (same id, or same send under another id)
	OutOfOrder int // acknowledged messages a recipient passed over, or showed at another seq
	// FinalDiffers counts (client, message) pairs whose final state (the
	// text after the edits the client shows, or recalled) is not the one
	// every event known leads to (acknowledged, or shown by any client),
	// or not the server's at a checkpoint, or not recalled where the
	// server answered a recall sent again with "recalled already".
	FinalDiffers int
	// ReadBack counts read positions that went back: a read reply, or a
	// sync at a checkpoint, below a position acknowledged before.
	ReadBack int
	// UnexpectedKicks counts kicked pushes no client should get: any but
	// that of a connection its client was leaving, by a login of its own
	// device (Record.AddKick).
	UnexpectedKicks int

	// Information.
	Devices      map[int]int    // users with n devices (clients), per n
	Kicks        map[string]int // kicked pushes by reason
	KicksAway    int            // of those, of a connection its client was leaving (expected)
	Raw          int            // messages that reached clients from the server: pushes and sync entries
	Redelivered  int            // of those, ones the client already held at their seq (not shown)
	HiddenOther  int            // of those, ones at or below the offset where the client holds another message, or none (not shown)
	Unacked      int            // messages shown whose send was never acknowledged (its reply was lost)
	GaveUp       int            // sends never acknowledged
	SeqConflicts int            // acknowledged messages sharing a conv and seq with another acknowledged message
	FinalChecked int            // (client, message) pairs whose final state was compared, at the end and at the checkpoints
	Edits        int            // acknowledged edits
	Recalls      int            // acknowledged recalls
	// Recalls sent again after a lost reply and answered "recalled
	// already": the first landed.
	RecallsLanded int
	// Edit events beyond the first with the same message and text: an
	// edit sent again after its reply was lost, stored twice. Not a
	// violation: the final view is the same (each is an event of its own,
	// with an id and seq of its own, and an edit has no clientMsgId).
	EditRepeats int

	Checkpoints        int // checkpoints compared (after faults, and at the end)
	CheckpointsSkipped int // checkpoints that could not be taken (Skipped says why)
	CheckpointsRetaken int // checkpoints compared a second time, after the clients settled again
	ReadsSent          int
	ReadsAcked         int
	ReadsRefused       int // refused: nothing stored
	ReadsChecked       int // read positions compared with the highest acknowledged at checkpoints
	TypingSent         int
	TypingFailed       int // not answered, or refused

	Problems []string // the first violations, described
	Unlisted int      // violations not in Problems
	// Skipped lists the checkpoints that could not be taken.
	Skipped []CheckpointResult
}

// OK reports whether the result has no violation.
func (r Result) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.OutOfOrder == 0 && r.FinalDiffers == 0 && r.ReadBack == 0 && r.UnexpectedKicks == 0
}

func (r *Result) problem(format string, args ...any) {
	if len(r.Problems) >= maxProblems {
		r.Unlisted++
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Check replays every client's arrivals through a View (what a correct
// client shows) and compares what each recipient shows with what was
// acknowledged. A user may have several clients (devices), each with its
// own view: a message must reach every one of them (Record.Expected).
func Check(rec *Record) Result {
	var res Result
	acks := rec.Acks()
	res.Acked = len(acks)
	res.GaveUp = len(rec.GaveUp())
	res.Devices = rec.DeviceCounts()
	expect := make([][]string, len(acks)) // per ack: the clients that must show it
	expected := make([]map[string]bool, len(acks))
	for i := range acks {
		expect[i] = rec.Expected(acks[i])
		expected[i] = map[string]bool{}
		for _, c := range expect[i] {
			expected[i][c] = true
		}
	}
	index := make(map[*Ack]int, len(acks))
	for i := range acks {
		index[&acks[i]] = i
	}

	byID := make(map[string]*Ack, len(acks))
	byConv := map[string][]*Ack{}
	for i := range acks {
		a := &acks[i]
		if prev, ok := byID[a.Msg.ID]; ok {
			// Two sends acknowledged with one message: one of them
			// was not stored.
			res.Lost += len(expect[i])
			res.Expected += len(expect[i])
			res.problem("lost: sends %s and %s were both acknowledged as message %s", prev.ClientMsgID, a.ClientMsgID, a.Msg.ID)
			continue
		}
		byID[a.Msg.ID] = a
		byConv[a.Msg.Conv] = append(byConv[a.Msg.Conv], a)
		switch a.Msg.Kind {
		case protocol.KindEdit:
			res.Edits++
		case protocol.KindRecall:
			res.Recalls++
		}
	}
	for conv, list := range byConv {
		sort.SliceStable(list, func(i, j int) bool { return list[i].Msg.Seq < list[j].Msg.Seq })
		for i := 1; i < len(list); i++ {
			if list[i].Msg.Seq == list[i-1].Msg.Seq {
				res.SeqConflicts++
				res.problem("conflict: %s seq %d was acknowledged as %s (%s) and as %s (%s)", conv, list[i].Msg.Seq,
					list[i-1].Msg.ID, list[i-1].ClientMsgID, list[i].Msg.ID, list[i].ClientMsgID)
			}
		}
	}

	shows := map[string]map[string]int{}     // message id -> recipient -> times shown
	seen := map[string]map[string][]string{} // acknowledged id -> client -> how it reached it when not shown
	note := func(id, user, how string) {
		if _, ok := byID[id]; !ok {
			return
		}
		if seen[id] == nil {
			seen[id] = map[string][]string{}
		}
		seen[id][user] = append(seen[id][user], how)
	}
	views := map[string]*View{}
	for _, user := range rec.Clients() {
		v := NewView()
		views[user] = v
		passed := map[string]bool{}            // acknowledged ids this user passed over
		bySend := map[string]map[string]bool{} // send -> ids shown
		for _, a := range rec.Arrivals(user) {
			m := a.Msg
			if a.Src != FromAck {
				res.Raw++
			}
			prev := v.Offset(m.Conv)
			verdict := v.Accept(m)
			if verdict != Shown {
				if a.Src != FromAck {
					if verdict == Redelivered {
						res.Redelivered++
					} else {
						res.HiddenOther++
					}
				}
				note(m.ID, user, fmt.Sprintf("%s at seq %d %s (offset %d)", a.Src, m.Seq, verdict, prev))
				continue
			}
			if m.Seq > prev+1 {
				list := byConv[m.Conv]
				i := sort.Search(len(list), func(i int) bool { return list[i].Msg.Seq > prev })
				for ; i < len(list) && list[i].Msg.Seq < m.Seq; i++ {
					ak := list[i]
					if ak.Msg.ID == m.ID || passed[ak.Msg.ID] || shows[ak.Msg.ID][user] > 0 || !expected[index[ak]][user] {
						continue
					}
					passed[ak.Msg.ID] = true
					res.OutOfOrder++
					res.problem("out of order: %s showed %s seq %d (%s, by %s) while it had not shown seq %d (%s, %s), acknowledged before",
						user, m.Conv, m.Seq, m.ID, a.Src, ak.Msg.Seq, ak.Msg.ID, ak.ClientMsgID)
				}
			}
			if a.Src == FromAck {
				continue
			}
			if shows[m.ID] == nil {
				shows[m.ID] = map[string]int{}
			}
			shows[m.ID][user]++
			if n := shows[m.ID][user]; n > 1 {
				res.Duplicates++
				res.problem("duplicate: %s showed message %s a %s time, now as %s seq %d by %s", user, m.ID, ordinal(n), m.Conv, m.Seq, a.Src)
			}
			if ak, ok := byID[m.ID]; !ok {
				res.Unacked++
			} else if ak.Msg.Seq != m.Seq || ak.Msg.Conv != m.Conv {
				res.OutOfOrder++
				res.problem("out of order: %s showed %s as %s seq %d (by %s), acknowledged as %s seq %d",
					user, m.ID, m.Conv, m.Seq, a.Src, ak.Msg.Conv, ak.Msg.Seq)
			}
			if k := sendKey(m); k != "" {
				ids := bySend[k]
				if ids == nil {
					ids = map[string]bool{}
					bySend[k] = ids
				}
				if !ids[m.ID] {
					ids[m.ID] = true
					if len(ids) > 1 {
						res.Duplicates++
						res.problem("duplicate: %s showed send %s again as another message, %s (%s seq %d, by %s); ids shown: %s",
							user, strings.TrimPrefix(m.Text, textPrefix), m.ID, m.Conv, m.Seq, a.Src, strings.Join(sortedKeys(ids), ", "))
					}
				}
			}
		}
	}

	checkFinal(&res, rec, acks, views)
	checkSignals(&res, rec)

	for _, user := range rec.Clients() {
		for _, a := range rec.Waiting(user) {
			note(a.Msg.ID, user, fmt.Sprintf("%s at seq %d, still waiting at the end behind a gap the client could not sync", a.Src, a.Msg.Seq))
		}
	}
	for i := range acks {
		a := &acks[i]
		if byID[a.Msg.ID] != a {
			continue // a second send acknowledged as one message: counted above
		}
		for _, r := range expect[i] {
			res.Expected++
			if shows[a.Msg.ID][r] > 0 {
				res.Delivered++
				continue
			}
			res.Lost++
			how := "it never reached " + r
			if s := seen[a.Msg.ID][r]; len(s) > 0 {
				how = "it reached " + r + " only as: " + strings.Join(s, "; ")
			}
			res.problem("lost: %s (%s seq %d, from %s, send %s) was acknowledged but %s never showed it; %s",
				a.Msg.ID, a.Msg.Conv, a.Msg.Seq, a.Msg.From, a.ClientMsgID, r, how)
		}
	}
	return res
}

// checkFinal compares every client's final view of every conversation it
// holds with the one every event known leads to: the messages and events
// acknowledged or shown by any client, each once (by id), applied in seq
// order. Two clients that hold the same messages and events therefore
// show the same; a client that missed an event shows the old state.
func checkFinal(res *Result, rec *Record, acks []Ack, views map[string]*View) {
	known := map[string]map[string]protocol.Message{} // conv -> id -> message or event
	add := func(m protocol.Message) {
		k := known[m.Conv]
		if k == nil {
			k = map[string]protocol.Message{}
			known[m.Conv] = k
		}
		if _, ok := k[m.ID]; !ok || m.Kind == "" && (m.Edited > 0 || m.Recalled) {
			// Of a message, the state read back last wins the base
			// (applying the events again reaches the same end).
			k[m.ID] = m
		}
	}
	for _, a := range acks {
		add(a.Msg)
	}
	for _, user := range rec.Clients() {
		for _, conv := range views[user].Convs() {
			for _, m := range views[user].Held(conv, 0) {
				add(m)
			}
		}
	}
	truth := make(map[string]map[int64]State, len(known))
	for conv, k := range known {
		msgs := make([]protocol.Message, 0, len(k))
		for _, m := range k {
			msgs = append(msgs, m)
		}
		sort.Slice(msgs, func(i, j int) bool {
			if msgs[i].Seq != msgs[j].Seq {
				return msgs[i].Seq < msgs[j].Seq
			}
			return msgs[i].ID < msgs[j].ID
		})
		truth[conv] = applyEvents(msgs)
	}
	repeats := map[string]map[string]bool{} // conv, ref and text of an edit -> ids
	for conv, k := range known {
		for id, m := range k {
			if m.Kind != protocol.KindEdit || m.Recalled {
				continue // an edit read back recalled has lost its text
			}
			key := fmt.Sprintf("%s\x00%d\x00%s", conv, m.Ref, m.Text)
			if repeats[key] == nil {
				repeats[key] = map[string]bool{}
			}
			repeats[key][id] = true
		}
	}
	for _, ids := range repeats {
		res.EditRepeats += len(ids) - 1
	}
	for _, user := range rec.Clients() {
		v := views[user]
		for _, conv := range v.Convs() {
			want := truth[conv]
			final := v.Final(conv)
			seqs := make([]int64, 0, len(final))
			for seq := range final {
				seqs = append(seqs, seq)
			}
			slices.Sort(seqs)
			for _, seq := range seqs {
				res.FinalChecked++
				if got := final[seq]; got != want[seq] {
					res.FinalDiffers++
					res.problem("final view: %s shows %s seq %d as %s; the events known lead to %s", user, conv, seq, got, want[seq])
				}
			}
		}
	}

	// A recall answered "recalled already" when sent again landed the
	// first time: its message is recalled wherever it is shown.
	for _, l := range rec.RecallsLanded() {
		res.RecallsLanded++
		if st, ok := truth[l.Conv][l.Ref]; ok && !st.Recalled {
			res.FinalDiffers++
			res.problem("final view: %s's recall of %s seq %d was answered \"recalled already\", but no recall of it is known; the events known lead to %s",
				l.User, l.Conv, l.Ref, st)
			continue
		}
		for _, user := range rec.Clients() {
			if st, ok := views[user].Final(l.Conv)[l.Ref]; ok && !st.Recalled {
				res.FinalDiffers++
				res.problem("final view: %s shows %s seq %d as %s, though %s's recall of it was answered \"recalled already\"", user, l.Conv, l.Ref, st, l.User)
			}
		}
	}
}

// checkSignals adds the reads and typing signals of the record, and the
// checkpoints' comparisons, to res.
func checkSignals(res *Result, rec *Record) {
	sig := rec.signals()
	res.ReadsSent, res.ReadsAcked, res.ReadsRefused = sig.readsSent, sig.readsAcked, sig.readsRefused
	res.TypingSent, res.TypingFailed = sig.typingSent, sig.typingFailed
	for _, p := range sig.readBack {
		res.ReadBack++
		res.problem("%s", p)
	}
	res.Kicks, res.KicksAway = sig.kicks, sig.kicksAway
	for _, p := range sig.badKicks {
		res.UnexpectedKicks++
		res.problem("%s", p)
	}
	for _, c := range rec.Checkpoints() {
		if c.Skipped != "" {
			res.CheckpointsSkipped++
			res.Skipped = append(res.Skipped, c)
			continue
		}
		res.Checkpoints++
		if c.Retaken {
			res.CheckpointsRetaken++
		}
		res.FinalChecked += c.Compared
		res.FinalDiffers += c.Differs
		res.ReadsChecked += c.ReadsChecked
		res.ReadBack += c.ReadBack
		for _, p := range c.Problems {
			res.problem("checkpoint %s", p)
		}
		res.Unlisted += c.Unlisted
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func ordinal(n int) string {
	switch n {
	case 2:
		return "second"
	case 3:
		return "third"
	}
	return fmt.Sprintf("%dth", n)
}
