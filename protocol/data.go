package protocol

import "strconv"

// Message is one chat message as clients see it, or one event of its
// conversation (Kind set: an edit or recall of an earlier message, a member
// joining or leaving a room). Seq is assigned once per conversation,
// cluster-wide, to messages and events alike.
//
// The fields are in the order encoding/json writes them; TS comes last,
// which MessagePushTS relies on.
type Message struct {
	ID   string `json:"id"`
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	Room string `json:"room,omitempty"`
	// Kind is "" for a message, else the event's kind (KindEdit,
	// KindRecall, KindJoin, KindLeave).
	Kind string `json:"kind,omitempty"`
	// Ref is, on an edit or recall, the seq of the message it changes.
	Ref int64 `json:"ref,omitempty"`
	// Edited is, on a message as read back, the time (unix ms) of its
	// last edit; Text is then the edited text.
	Edited int64 `json:"edited,omitempty"`
	// Recalled is, on a message as read back, true once it was recalled:
	// its Text is then "". An edit of a recalled message reads back so
	// too.
	Recalled bool   `json:"recalled,omitempty"`
	Text     string `json:"text"`
	TS       int64  `json:"ts"` // unix milliseconds
}

// LoginData is the data of a login request: a password or a token.
// Device optionally names the client's device (ValidDevice): under the
// multi login policy a login of the same user and device replaces that
// device's earlier connection instead of counting as one more device.
type LoginData struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Token    string `json:"token"`
	Device   string `json:"device,omitempty"`
}

// LoginReply is the data of a successful login.
type LoginReply struct {
	Username  string `json:"username"`
	Visitor   bool   `json:"visitor,omitempty"` // logged in with a visitor token: only the support actions
	Node      string `json:"node"`
	SessionID string `json:"sessionId"`
}

// RetryData is the data of a 429 reply to a password login that was
// throttled after too many failed ones: how long to wait before the next
// attempt, in whole seconds (rounded up).
type RetryData struct {
	RetryAfter int `json:"retryAfter"`
}

// ChatData is the data of a chat request. Exactly one of To, Room and Conv
// (a support conversation) is set.
type ChatData struct {
	To          string `json:"to"`
	Room        string `json:"room"`
	Conv        string `json:"conv"`
	Text        string `json:"text"`
	ClientMsgID string `json:"clientMsgId"`
}

// ChatReply acknowledges a stored message.
type ChatReply struct {
	ID   string `json:"id"`
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
	TS   int64  `json:"ts"`
}

// HistoryData selects a conversation by conv, with or room, and a page.
type HistoryData struct {
	Conv   string `json:"conv"`
	With   string `json:"with"`
	Room   string `json:"room"`
	Before int64  `json:"before"` // only messages with seq < before; 0: the newest
	Limit  int    `json:"limit"`
}

// Messages is the data of a history reply, oldest first.
type Messages struct {
	Messages []Message `json:"messages"`
}

// SyncData maps a conversation to the last seq the client holds.
type SyncData struct {
	Convs map[string]int64 `json:"convs"`
}

// SyncConv is what sync returns for one conversation.
type SyncConv struct {
	Latest   int64     `json:"latest"`
	Messages []Message `json:"messages"`
	Rebuild  bool      `json:"rebuild,omitempty"`
	// Floor, with Rebuild: the server lost nothing at or below this seq;
	// the client gives back what it holds above it. With Settling: what
	// the reply returns ends at it.
	Floor int64 `json:"floor,omitempty"`
	More  bool  `json:"more,omitempty"` // more missing messages than one reply holds: sync again
	// Settling: the counter was seeded moments ago after a loss of Redis
	// data, and other clients may still give back messages above Floor;
	// what lies above it is returned once that time is over. The client
	// keeps its offset and holds what arrives above it, and syncs again
	// shortly.
	Settling bool `json:"settling,omitempty"`
	// Read is how far the user has read the conversation (the highest
	// seq marked read); PeerRead, of a direct conversation, how far the
	// other user has. 0: nothing marked read.
	Read     int64 `json:"read,omitempty"`
	PeerRead int64 `json:"peerRead,omitempty"`
}

// SyncReply is the data of a sync reply.
type SyncReply struct {
	Convs map[string]SyncConv `json:"convs"`
}

// RebuildData uploads messages of one conversation that the client holds
// and the server has lost (a sync reply marked the conversation rebuild).
type RebuildData struct {
	Conv     string    `json:"conv"`
	Messages []Message `json:"messages"`
}

// RebuildReply says how many uploaded messages the server stored and the
// conversation's latest seq afterwards.
type RebuildReply struct {
	Conv     string `json:"conv"`
	Restored int    `json:"restored"`
	Latest   int64  `json:"latest"`
}

// UserInfoData names a user.
type UserInfoData struct {
	Username string `json:"username"`
}

// UserInfoReply tells whether a user is online and where. Node and
// LoginTime are those of the newest login; Devices lists every connection
// (device) of the user online, newest first.
type UserInfoReply struct {
	Username  string       `json:"username"`
	Online    bool         `json:"online"`
	Node      string       `json:"node,omitempty"`
	LoginTime int64        `json:"loginTime,omitempty"` // unix milliseconds
	Devices   []DeviceInfo `json:"devices,omitempty"`
}

// DeviceInfo is one connection of a user online, in UserInfoReply.
type DeviceInfo struct {
	Node      string `json:"node"`
	LoginTime int64  `json:"loginTime"`        // unix milliseconds
	Device    string `json:"device,omitempty"` // the name the client gave at login, if any
}

// Empty is the data of ping and its reply.
type Empty struct{}

// KickedPush tells a connection why it is being closed.
type KickedPush struct {
	Reason string `json:"reason"`
}

// Reasons of a kicked push (and of the close that follows it).
const (
	// KickElsewhere: single login policy, the user logged in on another
	// connection.
	KickElsewhere = "logged in elsewhere"
	// KickSameDevice: multi login policy, the same device (login data
	// "device") logged in again on another connection.
	KickSameDevice = "logged in again on this device"
)

// KickTooManyDevices is the reason of a kicked push under the multi login
// policy when a login goes over the bound of max devices and this
// connection was the user's oldest.
func KickTooManyDevices(max int) string {
	return "logged in on more than " + strconv.Itoa(max) + " devices; this one was the oldest"
}

// NodePush tells clients that this node is going away.
type NodePush struct {
	Reconnect bool `json:"reconnect"`
}

// ChatReply for a room message is the same as for a direct one.

// RoomData names a room: the data of joinRoom and leaveRoom.
type RoomData struct {
	Room string `json:"room"`
}

// RoomReply is the data of a joinRoom or leaveRoom reply. Members are
// sorted; Recent (join only) holds the room's last messages, oldest first.
type RoomReply struct {
	Room    string    `json:"room"`
	Members []string  `json:"members"`
	Recent  []Message `json:"recent,omitempty"`
}

// JoinReply is the data of a joinRoom reply: RoomReply with Recent
// always present, [] when the room has no message yet.
type JoinReply struct {
	Room    string    `json:"room"`
	Members []string  `json:"members"`
	Recent  []Message `json:"recent"`
}

// RoomInfo describes one room in a rooms reply.
type RoomInfo struct {
	Name    string `json:"name"`
	Members int    `json:"members"` // how many members it has
	Joined  bool   `json:"joined"`  // whether the asking user is a member
	// Owner is the user who created the room (whose join made it), who
	// may recall any of its messages; "" for a room made before rooms
	// recorded one.
	Owner string `json:"owner,omitempty"`
}

// RoomsReply is the data of a rooms reply, sorted by name.
type RoomsReply struct {
	Rooms []RoomInfo `json:"rooms"`
}

// PopularData asks for the n most used words (default DefaultPopular).
type PopularData struct {
	N int `json:"n"`
}

// WordCount is one word of the hot-word ranking.
type WordCount struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

// PopularReply is the ranking, most used first.
type PopularReply struct {
	Words []WordCount `json:"words"`
}

// PresencePush tells a room member that another member came online or
// went offline.
type PresencePush struct {
	Username string `json:"username"`
	Online   bool   `json:"online"`
}

// TypingData is the data of a typing request: the conversation the user
// is typing in, direct or room.
type TypingData struct {
	Conv string `json:"conv"`
}

// TypingPush tells the other members of a conversation who are online
// that From is typing in it.
type TypingPush struct {
	Conv string `json:"conv"`
	From string `json:"from"`
}

// ReadData is the data of a read request: the user has read Conv up to
// and including Seq.
type ReadData struct {
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
}

// ReadReply is the user's read position in Conv now stored: the highest
// seq ever marked read, which a lower one does not change.
type ReadReply struct {
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
}

// ReadPush tells that User has read Conv up to Seq: to the other side of
// a direct conversation, and to the user's own other connections.
type ReadPush struct {
	Conv string `json:"conv"`
	User string `json:"user"`
	Seq  int64  `json:"seq"`
}
