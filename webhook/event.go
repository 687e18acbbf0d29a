package webhook

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"chatcluster/internal/keyspace"
)

// Event types.
const (
	MessageStored   = "message.stored"
	MessageEdited   = "message.edited"
	MessageRecalled = "message.recalled"
	UserLogin       = "user.login"
	UserLogout      = "user.logout"
	RoomJoin        = "room.join"
	RoomLeave       = "room.leave"
	// MessageBefore is the type of a call of the before-message hook; it
	// is never queued.
	MessageBefore = "message.before"
)

// Types are the event types an endpoint can be given, in the order the
// documentation lists them.
var Types = []string{MessageStored, MessageEdited, MessageRecalled, UserLogin, UserLogout, RoomJoin, RoomLeave}

// kindTypes maps the kind of a conversation entry (the "kind" of a
// stored message; none for a plain message) to its event type. Entries of
// another kind are no event.
var kindTypes = map[string]string{
	"":       MessageStored,
	"edit":   MessageEdited,
	"recall": MessageRecalled,
	"join":   RoomJoin,
	"leave":  RoomLeave,
}

// Event is the body of a delivery.
type Event struct {
	ID   string          `json:"id"`   // unique, the same on every attempt
	Type string          `json:"type"` // one of Types
	TS   int64           `json:"ts"`   // when it happened, unix ms
	Data json.RawMessage `json:"data"`
}

// SessionData is the data of user.login and user.logout: the user, the
// node the connection is on and the connection's session id (what login
// answered), which pairs a logout with its login.
type SessionData struct {
	User      string `json:"user"`
	Node      string `json:"node"`
	SessionID string `json:"sessionId"`
	Visitor   bool   `json:"visitor,omitempty"` // a customer-service visitor
	Device    string `json:"device,omitempty"`  // the device the login named, if any
}

// The Redis layout. The queue is cut into the journal's shards (package
// keyspace), one stream per shard under the shard's hash tag, so the
// history writer appends a shard's messages to it in the same script that
// acknowledges their history entries (one Redis Cluster slot).
const (
	// StreamSuffix ends the key of each shard's queue stream:
	// prefix + tag + StreamSuffix.
	StreamSuffix = "webhooks"
	// fieldMessage holds a stored message's JSON (what the history
	// writer forwards); fieldEvent a whole event's JSON (what nodes add).
	fieldMessage = "m"
	fieldEvent   = "e"
)

// StreamKeys are the keys of the queue streams under prefix, one per
// shard.
func StreamKeys(prefix string) []string {
	tags := keyspace.NewTags()
	out := make([]string, len(tags))
	for i, tag := range tags {
		out[i] = prefix + tag + StreamSuffix
	}
	return out
}

// DeadKey is the stream of dead letters: events an endpoint did not take
// within the attempts allowed.
func DeadKey(prefix string) string { return prefix + "webhook:dead" }

// LeaseKey is the key of the dispatchers' lease: the consumer name of the
// one that delivers.
func LeaseKey(prefix string) string { return prefix + "webhook:dispatcher" }

// GroupName is the consumer group of an endpoint on every queue stream.
func GroupName(endpoint string) string { return "ep:" + endpoint }

// NewEventID returns a new event id: time-ordered, unique.
func NewEventID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "e-" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}

// stored is what an event needs of a conversation entry.
type stored struct {
	ID   string `json:"id"`
	Conv string `json:"conv"`
	From string `json:"from"`
	Room string `json:"room"`
	TS   int64  `json:"ts"`
	Kind string `json:"kind"`
}

// messageData is the data of the message events.
type messageData struct {
	Message json.RawMessage `json:"message"`
}

// roomData is the data of room.join and room.leave.
type roomData struct {
	Room    string          `json:"room"`
	User    string          `json:"user"`
	Message json.RawMessage `json:"message"`
}

// errMalformed marks a queue entry that is no event and never will be.
var errMalformed = errors.New("webhook: malformed queue entry")

// decodeEntry returns the event of a queue entry and its body. ok is false
// for an entry that is no event (a conversation entry of a kind without
// one); an error wraps errMalformed.
func decodeEntry(values map[string]any) (ev Event, body []byte, ok bool, err error) {
	if raw, has := values[fieldEvent].(string); has {
		if err := json.Unmarshal([]byte(raw), &ev); err != nil || ev.ID == "" || ev.Type == "" {
			return Event{}, nil, false, fmt.Errorf("%w: bad event JSON", errMalformed)
		}
		return ev, []byte(raw), true, nil
	}
	raw, has := values[fieldMessage].(string)
	if !has {
		if len(values) == 0 {
			return Event{}, nil, false, fmt.Errorf("%w: the entry was deleted from the queue", errMalformed)
		}
		return Event{}, nil, false, fmt.Errorf("%w: no %q or %q field", errMalformed, fieldEvent, fieldMessage)
	}
	var m stored
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.ID == "" {
		return Event{}, nil, false, fmt.Errorf("%w: bad message JSON", errMalformed)
	}
	typ, known := kindTypes[m.Kind]
	if !known {
		return Event{}, nil, false, nil
	}
	var data any = messageData{Message: json.RawMessage(raw)}
	if typ == RoomJoin || typ == RoomLeave {
		data = roomData{Room: m.Room, User: m.From, Message: json.RawMessage(raw)}
	}
	d, err := json.Marshal(data)
	if err != nil {
		return Event{}, nil, false, fmt.Errorf("%w: %v", errMalformed, err)
	}
	// The id comes from the message, so an entry the writer forwarded
	// twice (a redelivery) is one event to the receiver.
	ev = Event{ID: "m-" + m.ID, Type: typ, TS: m.TS, Data: d}
	body, err = json.Marshal(ev)
	if err != nil {
		return Event{}, nil, false, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return ev, body, true, nil
}
