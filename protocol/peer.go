package protocol

import (
	"encoding/json"
	"iter"
	"strings"
)

// Peer frame types, exchanged between nodes on the peer listener only. A
// client connection can never send them: the client port decodes only
// client actions.
const (
	PeerHello   = "hello"   // leader -> node: I lead with this epoch
	PeerLoad    = "load"    // node -> leader: my connection count
	PeerRoute   = "route"   // node -> leader: deliver the push Push of message Conv/Seq (or Message) to Users, wherever they are (or on node Dest)
	PeerDeliver = "deliver" // leader -> node: deliver Message to local Users
	PeerKick    = "kick"    // node -> leader -> node: close User's connection Conn (every one of User's connections without Conn), for Reason
	PeerRoom    = "room"    // node -> leader: room request Op for User, answered by a reply with the same Req
	PeerReply   = "reply"   // leader -> node: the answer to request Req
	PeerOnline  = "online"  // node -> leader: User logged in (Online) or out on connection Conn
	PeerRoster  = "roster"  // node -> leader: every session on the node, sent when a leader links
	PeerPush    = "push"    // leader -> node: hand the encoded push Push to local Users; with Conv, a message's push, once per connection
	PeerAck     = "ack"     // leader -> node: every frame up to Up is handled
	PeerSupport = "support" // node -> leader: customer-service request Op for User, answered by a reply with the same Req
	// PeerSignal carries a push that is no message and that nothing
	// stores (typing), best-effort: node -> leader, for the online members
	// of Room other than User, or for Users; leader -> node, for the
	// local Recipients. It goes only where links and queues have room,
	// and is dropped rather than held.
	PeerSignal = "signal"
)

// Room request operations, in PeerFrame.Op.
const (
	RoomJoin  = "join"
	RoomLeave = "leave"
	RoomList  = "list"
	RoomPost  = "post"
	// RoomChange stores an edit or recall (Message.Kind) of a message of
	// the room, answered like a post.
	RoomChange = "change"
)

// PeerSession is one logged-in connection in a roster frame.
type PeerSession struct {
	User string `json:"user"`
	Conn string `json:"conn"`
	Ver  int64  `json:"ver,omitempty"` // the login's session version
}

// PeerFrame is one frame of the peer link. Epoch is the sending leader's
// epoch on frames a leader sends, and the epoch of the leader the node
// believes in on frames a node sends; a receiver refuses frames whose epoch
// is older than the newest it has seen.
type PeerFrame struct {
	Type        string   `json:"type"`
	Epoch       int64    `json:"epoch"`
	From        string   `json:"from"`
	Dest        string   `json:"dest,omitempty"`
	Users       []string `json:"users,omitempty"`
	Message     *Message `json:"message,omitempty"`
	Conn        string   `json:"conn,omitempty"`
	Connections int      `json:"connections,omitempty"`
	Started     int64    `json:"started,omitempty"`  // node start, unix ms, on load frames
	Messages    int64    `json:"messages,omitempty"` // messages accepted since start, on load frames

	// Up numbers the frames a node queues for the leader (a counter of
	// the node's run), so the leader can acknowledge them (ack frames)
	// and the node hand the unacknowledged ones to the next link.
	Up uint64 `json:"up,omitempty"`

	// Requests to the leader and their replies.
	Req         uint64          `json:"req,omitempty"`         // request id, chosen by the asking node
	Op          string          `json:"op,omitempty"`          // room operation
	Room        string          `json:"room,omitempty"`        // room name
	User        string          `json:"user,omitempty"`        // the user asking, or whose presence changed
	ClientMsgID string          `json:"clientMsgId,omitempty"` // idempotency key of a post
	Deadline    int64           `json:"deadline,omitempty"`    // unix ms after which the asker no longer waits
	Code        int             `json:"code,omitempty"`        // reply: 0 or a client error code
	Error       string          `json:"error,omitempty"`       // reply: why, for the client
	Members     []string        `json:"members,omitempty"`     // reply: room members
	Rooms       []RoomInfo      `json:"rooms,omitempty"`       // reply: room list
	Dup         bool            `json:"dup,omitempty"`         // reply to a post: the clientMsgId was seen before
	Online      bool            `json:"online,omitempty"`      // presence: logged in (true) or out
	Ver         int64           `json:"ver,omitempty"`         // presence: the login's session version
	Sessions    []PeerSession   `json:"sessions,omitempty"`    // roster
	Push        json.RawMessage `json:"push,omitempty"`        // an encoded client push
	Conv        string          `json:"conv,omitempty"`        // push of a message: its conversation
	Seq         int64           `json:"seq,omitempty"`         // push of a message: its seq
	Busy        bool            `json:"busy,omitempty"`        // ack: the leader cannot hand messages on as fast as they come; refuse new ones for a moment
	RetryAfter  int             `json:"retryAfter,omitempty"`  // reply: seconds the client is to wait before trying again
	Support     *SupportPeer    `json:"support,omitempty"`     // support request or reply: what else it carries
	Server      *ServerPeer     `json:"server,omitempty"`      // server API request, reply or kick: what else it carries

	// Except names a connection a route or push frame's push is not
	// handed to (the one that sent the message, which has the reply);
	// the push still reaches every other connection of the users.
	Except string `json:"except,omitempty"`
	// Away says a route frame's push is not for the node that sent it:
	// that node has handed it to its own connections of the users.
	Away bool `json:"away,omitempty"`
	// Reason is a kick frame's reason, as the kicked push says it; empty:
	// KickElsewhere.
	Reason string `json:"reason,omitempty"`

	// Again marks a route frame a node hands over a second time, after the
	// link it first went out on was lost unacknowledged, and the push
	// frames the leader makes of it: the message may have reached its
	// recipients already, on connections that are gone since. A connection
	// that logged in after the message was written is not given it again:
	// its client syncs after logging in.
	Again bool `json:"again,omitempty"`

	// Recipients names the local users of a deliver or push frame, joined
	// by commas (names never hold one): a node walks it without
	// allocating per recipient.
	Recipients string `json:"recipients,omitempty"`
}

// JoinNames joins user names for PeerFrame.Recipients.
func JoinNames(users []string) string { return strings.Join(users, ",") }

// Names yields the names of a PeerFrame.Recipients list.
func Names(list string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for list != "" {
			name, rest, _ := strings.Cut(list, ",")
			if !yield(name) {
				return
			}
			list = rest
		}
	}
}

// EncodePeer encodes a peer frame.
func EncodePeer(f *PeerFrame) ([]byte, error) {
	if fastPeer(f) {
		return appendFastPeer(make([]byte, 0, 128+len(f.Push)+len(f.Recipients)), f), nil
	}
	return json.Marshal(f)
}

// DecodePeer decodes a peer frame.
func DecodePeer(b []byte) (PeerFrame, error) {
	var f PeerFrame
	if len(b) > MaxPeerFrame {
		return f, Errorf(CodeTooLarge, "peer frame of %d bytes is over the limit", len(b))
	}
	if fast, ok := decodeFastPeer(b); ok {
		return fast, nil
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, Errorf(CodeBadRequest, "malformed peer frame: %s", jsonReason(err))
	}
	if f.Type == "" {
		return f, Errorf(CodeBadRequest, "peer frame without type")
	}
	return f, nil
}
