package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"chatcluster/protocol"
)

// Source says how a message reached a client.
type Source uint8

const (
	// FromPush: a message push.
	FromPush Source = iota + 1
	// FromSync: an entry of a sync reply.
	FromSync
	// FromAck: the client's own direct message, from its chat reply. A
	// client keeps its own messages (they count for its offsets), but this
	// is not a delivery: the sender is not a recipient of its direct
	// message.
	FromAck
)

func (s Source) String() string {
	switch s {
	case FromPush:
		return "push"
	case FromSync:
		return "sync"
	case FromAck:
		return "ack"
	}
	return "?"
}

// Ack is an acknowledged send: a message, or an edit or recall event.
type Ack struct {
	// Msg is the message or event as acknowledged: id, conv, seq and ts
	// from the reply; from, to or room, text (and of an event kind and
	// ref) as sent.
	Msg protocol.Message
	// ClientMsgID is the send's clientMsgId; of an event (which has
	// none) a label of the workload's, for the violations it appears in.
	ClientMsgID string
	// Recipients must each show the message: the addressee of a direct
	// message; every member of the room, the sender included. An event
	// has the recipients of a message of its conversation.
	Recipients []string
}

// Arrival is a message that reached a client, in the order the client
// processed it.
type Arrival struct {
	Msg protocol.Message
	Src Source
}

// Record is the full record of a run: what was acknowledged, and what
// reached each client. Safe for concurrent use.
type Record struct {
	mu       sync.Mutex
	acks     []Ack
	arrivals map[string][]Arrival // per client
	waiting  map[string][]Arrival // per client: received, never processed (behind a gap at the end)
	gaveUp   []string             // clientMsgIds of sends never acknowledged

	reads        map[readKey]int64 // highest read position acknowledged, per user and conversation
	readsSent    int
	readsAcked   int
	readsRefused int
	readBack     []string // read replies below what was acknowledged before: positions that went back
	landed       []Recalled
	typingSent   int
	typingFailed int
	checkpoints  []CheckpointResult
}

type readKey struct{ user, conv string }

// Recalled is a recall the server answered "recalled already" when it was
// sent again: the first attempt landed, though its reply was lost.
type Recalled struct {
	User string
	Conv string
	Ref  int64 // the seq of the message recalled
}

// NewRecord returns an empty record.
func NewRecord() *Record {
	return &Record{arrivals: map[string][]Arrival{}, waiting: map[string][]Arrival{}, reads: map[readKey]int64{}}
}

// AddClient makes user part of the record even if nothing reaches it.
func (r *Record) AddClient(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.arrivals[user]; !ok {
		r.arrivals[user] = nil
	}
}

// AddAck records an acknowledged send.
func (r *Record) AddAck(a Ack) {
	a.Recipients = slices.Clone(a.Recipients)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acks = append(r.acks, a)
}

// AddArrival records that m reached user. Calls for one user must come in
// the order the user's client processed the messages.
func (r *Record) AddArrival(user string, m protocol.Message, src Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.arrivals[user] = append(r.arrivals[user], Arrival{Msg: m, Src: src})
}

// AddWaiting records that m reached user but was never processed: when
// the run ended it still waited for messages before it (a gap the client
// could not fill). It is not shown; the checker only mentions it.
func (r *Record) AddWaiting(user string, m protocol.Message, src Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting[user] = append(r.waiting[user], Arrival{Msg: m, Src: src})
}

// Waiting returns what reached user but was never processed.
func (r *Record) Waiting(user string) []Arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.waiting[user])
}

// AddGaveUp records a send that was never acknowledged (retries
// exhausted, or refused).
func (r *Record) AddGaveUp(clientMsgID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaveUp = append(r.gaveUp, clientMsgID)
}

// Acks returns the acknowledged sends, in the order recorded.
func (r *Record) Acks() []Ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.acks)
}

// AckCount returns the number of acknowledged sends.
func (r *Record) AckCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acks)
}

// Arrivals returns what reached user, in processing order.
func (r *Record) Arrivals(user string) []Arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.arrivals[user])
}

// Users returns the clients of the record, sorted.
func (r *Record) Users() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Collect(maps.Keys(r.arrivals))
	sort.Strings(out)
	return out
}

// GaveUp returns the clientMsgIds of sends never acknowledged.
func (r *Record) GaveUp() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.gaveUp)
}

// AddReadSent records a read request sent (answered or not).
func (r *Record) AddReadSent() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readsSent++
}

// AddReadRefused records a read request the server refused (a seq above
// its latest, after it lost data): nothing was stored.
func (r *Record) AddReadRefused() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readsRefused++
}

// AddReadAck records that user's read of conv at seq was acknowledged
// with stored, the position the server now stores. Positions only rise:
// a stored position below seq, or below one acknowledged before, is a
// position that went back, and is recorded as such.
func (r *Record) AddReadAck(user, conv string, seq, stored int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readsAcked++
	k := readKey{user, conv}
	prev := r.reads[k]
	switch {
	case stored < prev:
		r.readBack = append(r.readBack, fmt.Sprintf("read position went back: %s read %s at %d, and the server answered that it stores %d; %d was acknowledged before",
			user, conv, seq, stored, prev))
	case stored < seq:
		r.readBack = append(r.readBack, fmt.Sprintf("read position went back: %s read %s at %d, and the server answered that it stores %d", user, conv, seq, stored))
	}
	r.reads[k] = max(prev, seq, stored)
}

// ReadsAcked returns the highest read position acknowledged, per user and
// conversation.
func (r *Record) ReadsAcked() map[string]map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[string]int64{}
	for k, seq := range r.reads {
		if out[k.user] == nil {
			out[k.user] = map[string]int64{}
		}
		out[k.user][k.conv] = seq
	}
	return out
}

// AddRecallLanded records a recall answered "recalled already" when sent
// again: every final view must show the message recalled.
func (r *Record) AddRecallLanded(user, conv string, ref int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.landed = append(r.landed, Recalled{User: user, Conv: conv, Ref: ref})
}

// RecallsLanded returns the recalls answered "recalled already".
func (r *Record) RecallsLanded() []Recalled {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.landed)
}

// AddTyping records a typing signal sent, and whether it was answered.
func (r *Record) AddTyping(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.typingSent++
	if !ok {
		r.typingFailed++
	}
}

// AddCheckpoint records the comparison of one checkpoint.
func (r *Record) AddCheckpoint(c CheckpointResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checkpoints = append(r.checkpoints, c)
}

// Checkpoints returns the checkpoints' comparisons, in the order taken.
func (r *Record) Checkpoints() []CheckpointResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.checkpoints)
}

// signals are the record's counts of reads and typing.
type signals struct {
	readsSent, readsAcked, readsRefused int
	readBack                            []string
	typingSent, typingFailed            int
}

func (r *Record) signals() signals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return signals{r.readsSent, r.readsAcked, r.readsRefused, slices.Clone(r.readBack), r.typingSent, r.typingFailed}
}

// textPrefix starts the text of every message of the workload; the rest
// of the text is the send's clientMsgId, so that the checker can tell one
// send stored twice (under two ids) from two sends.
const textPrefix = "chaos "

// Text returns the text of the send with clientMsgID.
func Text(clientMsgID string) string { return textPrefix + clientMsgID }

// EditText returns the new text of the workload's edit with label key:
// unique to the edit, and never taken for a send's text.
func EditText(key string) string { return textPrefix + "edit " + key }

// sendKey identifies the send a message came from: its sender and the
// clientMsgId its text carries ("" if the text is not the workload's).
// Only of a message as sent: an edited one carries its edit's text, and
// an event is no message (an edit sent again after its reply was lost is
// stored again, which changes no final state).
func sendKey(m protocol.Message) string {
	if m.Kind != "" || m.Edited > 0 || m.Recalled {
		return ""
	}
	id, ok := strings.CutPrefix(m.Text, textPrefix)
	if !ok || id == "" {
		return ""
	}
	return m.From + "\x00" + id
}
