package handler

import (
	"context"
	"errors"

	"chatcluster/protocol"
)

// Errors the dependencies return that the handler maps to client codes.
var (
	ErrBadCredentials = errors.New("handler: bad credentials")
	ErrUnknownUser    = errors.New("handler: unknown user")
	ErrUnavailable    = errors.New("handler: dependency unavailable")
	ErrBusy           = errors.New("handler: routing queue full")
	ErrOverloaded     = errors.New("handler: cluster overloaded")
)

// Conn is the client connection a request came in on.
type Conn interface {
	ConnID() string
	// User is the logged-in user, "" before login.
	User() string
	// RemoteAddr is the client's network address (host:port), by which
	// failed password logins are counted.
	RemoteAddr() string
}

// Users authenticates users and finds them by name. A name given by a
// client may be any spelling of a user's name with the same normal form
// ("Alice" for "alice"); the user's own name is what is returned.
type Users interface {
	// CheckPassword checks a password login of user from remote (the
	// client's address) and returns the user's own name. Errors:
	// ErrBadCredentials, ErrUnavailable, or a *protocol.Error 429 while
	// failed logins of the account or from the address make it wait.
	CheckPassword(ctx context.Context, user, password, remote string) (string, error)
	// TokenUser returns the user a session token belongs to, or
	// ErrBadCredentials.
	TokenUser(ctx context.Context, token string) (string, error)
	// Resolve returns the own name of the user a client's name stands
	// for; ErrUnknownUser or ErrUnavailable.
	Resolve(ctx context.Context, user string) (string, error)
}

// Presence is where users are logged in: Node and LoginTime of the
// newest login, Devices every connection online, newest first.
type Presence struct {
	Online    bool
	Node      string
	LoginTime int64
	Devices   []protocol.DeviceInfo
}

// Sessions logs connections in and says where users are.
type Sessions interface {
	// Login binds c to user, on device ("" when the client named none),
	// locally and globally, and kicks what the login policy says the
	// login replaces: any older connection of the user (single policy),
	// or the older connection of the same device and, over the bound,
	// the oldest device (multi policy). It returns the session id.
	Login(ctx context.Context, c Conn, user, device string) (string, error)
	// Lookup says whether user is online; a session on a node that is not
	// live counts as offline.
	Lookup(ctx context.Context, user string) (Presence, error)
}

// Stored is what Journal.Append did with a message.
type Stored struct {
	// Message is the message as stored, with its seq; for a resend, what
	// the first message was (its id, conversation, seq and time; no text).
	Message protocol.Message
	// Push is the message push its recipients get, encoded once where the
	// message was stored; nil for a resend.
	Push []byte
	// Dup says the message was a resend: nothing was stored.
	Dup bool
}

// Gap is what sync must know of a conversation whose counter was seeded
// after a loss of Redis data: the server may lack messages above Floor,
// the highest seq then stored (it lost nothing at or below it), which
// clients still hold and give back (rebuild).
type Gap struct {
	Floor int64
	// Rebuild: the client's offset is above Floor and names a message the
	// server does not hold: the client holds what the server lost.
	Rebuild bool
	// Settling: the counter was seeded moments ago, and other clients may
	// still give back messages above Floor. A client given what lies above
	// would move its offset past numbers that may still be filled, and
	// never see what fills them: it is given nothing above Floor yet.
	Settling bool
}

// Journal stores and reads messages.
type Journal interface {
	// Append stores m (its Seq is assigned), recording the conversation for
	// members. A repeated clientMsgID of the same sender returns the first
	// message with Dup set.
	Append(ctx context.Context, m protocol.Message, clientMsgID string, members []string) (Stored, error)
	// Unsure returns the conversations, of those synced from offsets, whose
	// counters were seeded after a loss of Redis data and where the
	// client cannot simply be given what lies above its offset (Gap).
	Unsure(ctx context.Context, offsets map[string]int64) (map[string]Gap, error)
	// Latest returns each conversation's latest seq, 0 when it has none.
	Latest(ctx context.Context, convs []string) (map[string]int64, error)
	// Convs lists the user's conversations.
	Convs(ctx context.Context, user string) ([]string, error)
	// Restore stores messages of conv a client uploaded that the server
	// lost (those above its latest seq), recording conv for members, and
	// returns how many it stored and the latest seq.
	Restore(ctx context.Context, conv string, msgs []protocol.Message, members []string) (int, int64, error)
	// Range returns messages with after < seq < before (before <= 0: no
	// bound), oldest first: the last limit of them if newest, else the
	// first limit.
	Range(ctx context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error)
}

// Router delivers stored messages to recipients wherever they are.
type Router interface {
	// Ready returns ErrBusy when cross-node traffic cannot be accepted now;
	// the handler then refuses the message before storing it.
	Ready() error
	// Deliver hands m, whose encoded push is push, to its recipients, live
	// ones now, on every connection each has; it must not block on the
	// network. Recipients it cannot reach get m through sync.
	Deliver(m protocol.Message, push []byte, to []string)
	// DeliverExcept hands push to every connection of user, wherever it
	// is, but the connection except ("" none): with m, the message push
	// is the encoded push of (push may then be nil), which a connection
	// gets once; with m nil, any other push. It must not block on the
	// network; what it cannot deliver is lost (a message then comes by
	// sync).
	DeliverExcept(user, except string, push []byte, m *protocol.Message)
}

// Rooms are chat rooms, owned by the cluster's leader.
type Rooms interface {
	// Join makes user a member of room, creating the room if need be, and
	// returns its members. Joining again changes nothing.
	Join(ctx context.Context, user, room string) ([]string, error)
	// Leave removes user from room and returns the members left; a
	// *protocol.Error 404 if the room does not exist.
	Leave(ctx context.Context, user, room string) ([]string, error)
	// List returns every room, saying which ones user has joined.
	List(ctx context.Context, user string) ([]protocol.RoomInfo, error)
	// Post stores m (its Seq is assigned) in room m.Room and delivers it to
	// every member, m.From included. A repeated clientMsgID returns the
	// first message and dup true. Errors: *protocol.Error 404 unknown room,
	// 403 not a member.
	Post(ctx context.Context, m protocol.Message, clientMsgID string) (stored protocol.Message, dup bool, err error)
	// Change stores m, an edit or recall (m.Kind) by m.From of message
	// m.Ref of room m.Room, if the EventPolicy allows it, and delivers it
	// to every member, m.From included. Errors: *protocol.Error 404
	// unknown room or no such message, 403 not a member or not allowed,
	// 400 the target is an event, 409 it is recalled.
	Change(ctx context.Context, m protocol.Message) (protocol.Message, error)
}

// Words counts the words of messages for the hot-word ranking.
type Words interface {
	// Count counts the words of a stored message's text. The handler calls
	// it once per message newly stored for a client (not for a resent
	// clientMsgId). It must not block.
	Count(m protocol.Message)
	// Top returns the n most used words, most used first.
	Top(ctx context.Context, n int) ([]protocol.WordCount, error)
}

// Filter masks unwanted words in a text before it is stored.
type Filter func(text string) string

// Clock returns the time in unix milliseconds.
type Clock func() int64

// Screen is the before-message hook: it is asked about every message a
// client sends, before the message is stored. See Handler.screen for what
// the handler does with the answer.
type Screen interface {
	// Screen returns the verdict on m, the message as it would be stored
	// (its text through the filter; no seq yet), within the hook's own
	// deadline. An error means there is no usable verdict: a failure, a
	// timeout or an answer that is not one.
	Screen(ctx context.Context, m protocol.Message) (Verdict, error)
	// FailClosed says whether a message is refused (503) when Screen
	// fails; otherwise it is stored as sent.
	FailClosed() bool
}

// Verdict is what the before-message hook says about a message.
type Verdict struct {
	Action string // VerdictAllow, VerdictReject or VerdictRewrite
	Reason string // reject: said to the sender
	Text   string // rewrite: the text to store instead
}

// The actions of a Verdict.
const (
	VerdictAllow   = "allow"
	VerdictReject  = "reject"
	VerdictRewrite = "rewrite"
)
