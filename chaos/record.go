package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

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
	// Recipients are the users who must show the message, on every
	// device of theirs: the addressee of a direct message; every member
	// of the room, the sender included. An event has the recipients of a
	// message of its conversation.
	Recipients []string
	// Device is the client (device) that sent it; "" means the client
	// named as the sender (a user with one device). Of a direct message
	// the sender's other devices are recipients too (Record.Expected).
	Device string
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
	arrivals map[string][]Arrival // per client (device)
	users    map[string]string    // client -> its user
	waiting  map[string][]Arrival // per client: received, never processed (behind a gap at the end)
	gaveUp   []string             // clientMsgIds of sends never acknowledged

	reads map[readKey][]readAck // read positions acknowledged, per user and conversation, in order
	// redisLost holds when each Redis fault was injected: Redis may have
	// lost what it held (a restart empties it; a replica promoted may
	// lack the last writes). See durableFloor.
	redisLost    []time.Time
	readsSent    int
	readsAcked   int
	readsRefused int
	readBack     []string // read replies below what was acknowledged before: positions that went back
	landed       []Recalled
	typingSent   int
	typingFailed int
	checkpoints  []CheckpointResult

	kicks     map[string]int // kicked pushes by reason
	kicksAway int            // of those, kicks of a connection its client was leaving (reconnecting)
	badKicks  []string       // kicks no client should get: violations
}

type readKey struct{ user, conv string }

// readAck is a read position acknowledged, and when.
type readAck struct {
	seq int64
	at  time.Time
}

// ReadDurableAfter is how long after its acknowledgement a read position
// is surely in MongoDB: a node writes the queued positions behind, every
// 3 s or so, and another takes over within about 6 s when it dies
// (docs/protocol.md, 4.14), so Redis losing its data loses the rises of
// the last few seconds. A position acknowledged within this before a
// Redis fault may go back to an earlier one; any other going back is a
// violation.
const ReadDurableAfter = 12 * time.Second

// AddRedisLoss records that a Redis fault is injected now.
func (r *Record) AddRedisLoss() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.redisLost = append(r.redisLost, time.Now())
}

// durableFloor is the highest of acks that no Redis fault can have taken
// away: acknowledged after every fault that came before it was durable.
// r.mu held.
func (r *Record) durableFloor(acks []readAck) int64 {
	var floor int64
	for _, a := range acks {
		lost := false
		for _, f := range r.redisLost {
			if !f.Before(a.at) && f.Before(a.at.Add(ReadDurableAfter)) {
				lost = true
				break
			}
		}
		if !lost {
			floor = max(floor, a.seq)
		}
	}
	return floor
}

// Recalled is a recall the server answered "recalled already" when it was
// sent again: the first attempt landed, though its reply was lost.
type Recalled struct {
	User string
	Conv string
	Ref  int64 // the seq of the message recalled
}

// NewRecord returns an empty record.
func NewRecord() *Record {
	return &Record{arrivals: map[string][]Arrival{}, users: map[string]string{}, waiting: map[string][]Arrival{},
		reads: map[readKey][]readAck{}, kicks: map[string]int{}}
}

// AddClient makes user part of the record, as a user with one client
// named like the user, even if nothing reaches it.
func (r *Record) AddClient(user string) { r.AddDevice(user, user) }

// AddDevice makes client, one device of user, part of the record even if
// nothing reaches it. A user may have several.
func (r *Record) AddDevice(client, user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.arrivals[client]; !ok {
		r.arrivals[client] = nil
	}
	r.users[client] = user
}

// UserOf returns the user of client (the client's own name if unknown).
func (r *Record) UserOf(client string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.userOfLocked(client)
}

func (r *Record) userOfLocked(client string) string {
	if u, ok := r.users[client]; ok {
		return u
	}
	return client
}

// Devices returns the clients of user, sorted; a user the record has no
// client of is its own only one.
func (r *Record) Devices(user string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.devicesLocked(user)
}

func (r *Record) devicesLocked(user string) []string {
	var out []string
	for c, u := range r.users {
		if u == user {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return []string{user}
	}
	sort.Strings(out)
	return out
}

// Expected returns the clients that must show a: every device of every
// recipient and, of a direct message (or an event of a direct
// conversation), every device of the sender but the one that sent it
// (which holds it from its reply). Sorted, each once.
func (r *Record) Expected(a Ack) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := map[string]bool{}
	for _, u := range a.Recipients {
		for _, c := range r.devicesLocked(u) {
			set[c] = true
		}
	}
	if a.Msg.Room == "" && a.Msg.From != "" {
		sender := a.Device
		if sender == "" {
			sender = a.Msg.From
		}
		for _, c := range r.devicesLocked(a.Msg.From) {
			if c != sender {
				set[c] = true
			}
		}
	}
	return sortedKeys(set)
}

// DeviceCounts returns how many users have n clients, per n.
func (r *Record) DeviceCounts() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	per := map[string]int{}
	for c := range r.arrivals {
		per[r.userOfLocked(c)]++
	}
	out := map[int]int{}
	for _, n := range per {
		out[n]++
	}
	return out
}

// AddKick records a kicked push that reached client with reason. away
// says the client was leaving that connection already (reconnecting), so
// that a kick of an earlier login of its own device is expected; want is
// the reason such a kick gives under the cluster's login policy. Any
// other kick is a violation: only the workload logs in as its users, each
// device under its own name, far below the bound of devices.
func (r *Record) AddKick(client, reason string, away bool, want string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kicks[reason]++
	switch {
	case away && reason == want:
		r.kicksAway++
	case away:
		r.badKicks = append(r.badKicks, fmt.Sprintf("unexpected kick: %s was kicked while reconnecting with reason %q; only %q can happen then", client, reason, want))
	default:
		r.badKicks = append(r.badKicks, fmt.Sprintf("unexpected kick: %s was kicked on its live connection with reason %q", client, reason))
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

// Clients returns the clients (devices) of the record, sorted.
func (r *Record) Clients() []string {
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
	r.AddReadAckSince(user, conv, seq, stored, r.ReadAcked(user, conv))
}

// ReadAcked returns the highest read position of user in conv
// acknowledged so far that no Redis fault can have taken away
// (ReadDurableAfter).
func (r *Record) ReadAcked(user, conv string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.durableFloor(r.reads[readKey{user, conv}])
}

// AddReadAckSince is AddReadAck for a read sent when before
// (ReadAcked) was the highest position acknowledged: the user's other
// devices read on connections of their own, so a reply to one may be
// recorded after a later reply to another; only a position acknowledged
// before the request went counts against it.
func (r *Record) AddReadAckSince(user, conv string, seq, stored, before int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readsAcked++
	k := readKey{user, conv}
	prev := before
	switch {
	case stored < prev:
		r.readBack = append(r.readBack, fmt.Sprintf("read position went back: %s read %s at %d, and the server answered that it stores %d; %d was acknowledged before",
			user, conv, seq, stored, prev))
	case stored < seq:
		r.readBack = append(r.readBack, fmt.Sprintf("read position went back: %s read %s at %d, and the server answered that it stores %d", user, conv, seq, stored))
	}
	r.reads[k] = append(r.reads[k], readAck{seq: max(seq, stored), at: time.Now()})
}

// ReadsAcked returns, per user and conversation, the highest read
// position acknowledged that no Redis fault can have taken away
// (ReadDurableAfter).
func (r *Record) ReadsAcked() map[string]map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[string]int64{}
	for k, acks := range r.reads {
		if out[k.user] == nil {
			out[k.user] = map[string]int64{}
		}
		out[k.user][k.conv] = r.durableFloor(acks)
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

// signals are the record's counts of reads, typing and kicks.
type signals struct {
	readsSent, readsAcked, readsRefused int
	readBack                            []string
	typingSent, typingFailed            int
	kicks                               map[string]int
	kicksAway                           int
	badKicks                            []string
}

func (r *Record) signals() signals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return signals{r.readsSent, r.readsAcked, r.readsRefused, slices.Clone(r.readBack), r.typingSent, r.typingFailed,
		maps.Clone(r.kicks), r.kicksAway, slices.Clone(r.badKicks)}
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
