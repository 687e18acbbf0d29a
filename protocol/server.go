package protocol

// The server API: what bots, moderation and other systems ask of the
// cluster through the gateway (POST /api/server/..., docs/protocol.md,
// "Server API"), the operations the gateway forwards to a node, and what
// a node asks of the leader for them.

// ServerPath is the path, on a node's peer listener, under which the node
// runs server API operations for the gateway: POST ServerPath + op.
const ServerPath = "/server/"

// Server API operations a node runs (the last element of its path).
const (
	ServerPublish    = "publish"
	ServerDisconnect = "disconnect"
	ServerOnline     = "online"
	ServerMembers    = "members"
	ServerCreateRoom = "createRoom"
	ServerDeleteRoom = "deleteRoom"
)

// Room request operations of the server API, in PeerFrame.Op of a
// PeerRoom frame, besides RoomJoin and the others.
const (
	RoomCreate  = "create"  // create Room with Members; 409 if the name is taken
	RoomDelete  = "delete"  // delete Room for good, telling its online members (Server.Reason)
	RoomMembers = "members" // Room's members, and which of them are online (Users)
	RoomEnter   = "enter"   // join User to Room like RoomJoin, but never create it
	RoomOnline  = "online"  // a page of the online users (Server.After, Server.Limit)
)

// Limits of the server API.
const (
	MaxReasonLen         = 200  // bytes of a disconnect's or a room deletion's reason
	MaxOnlinePage        = 1000 // users one page of the online list may hold
	DefaultOnlinePage    = 100
	MaxCreateMembers     = 1000     // members a room may be created with
	MaxServerRequestBody = 64 << 10 // bytes of one server API request body
)

// PushRoomDeleted tells a room's online members that it was deleted.
const PushRoomDeleted = "roomDeleted"

// RoomDeletedPush is the data of a roomDeleted push.
type RoomDeletedPush struct {
	Room   string `json:"room"`
	Reason string `json:"reason,omitempty"`
}

// ServerPeer is the server API part of a peer frame: of a kick frame
// (PeerKick) the reason its user is told, of a room request of the server
// API what it needs besides user and room, or what the leader answers.
type ServerPeer struct {
	Reason string `json:"reason,omitempty"`
	After  string `json:"after,omitempty"` // online: the page starts after this user
	Limit  int    `json:"limit,omitempty"` // online: at most this many users

	Present []OnlineUser `json:"present,omitempty"` // reply to online: the page
	More    bool         `json:"more,omitempty"`    // reply to online: users follow the page
}

// OnlineUser is one logged-in user of the online list and the node it is
// connected to.
type OnlineUser struct {
	Username string `json:"username"`
	Node     string `json:"node"`
}

// ServerMessage is the body of a publish: a message sent as user From
// (an existing account) to user To or room Room.
type ServerMessage struct {
	From        string `json:"from"`
	To          string `json:"to,omitempty"`
	Room        string `json:"room,omitempty"`
	Text        string `json:"text"`
	ClientMsgID string `json:"clientMsgId,omitempty"`
}

// ServerDisconnectData is the body of a disconnect.
type ServerDisconnectData struct {
	Username string `json:"username"`
	Reason   string `json:"reason,omitempty"`
}

// ServerDisconnectReply says whom a disconnect closed: Online is whether
// the user had a session on a live node when it was asked.
type ServerDisconnectReply struct {
	Username string `json:"username"`
	Online   bool   `json:"online"`
}

// ServerOnlineData asks for a page of the online users, by name after
// After (exclusive), at most Limit of them.
type ServerOnlineData struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// ServerOnlineReply is a page of the online users, sorted by name. Next,
// when set, is the After of the next page.
type ServerOnlineReply struct {
	Users []OnlineUser `json:"users"`
	Next  string       `json:"next,omitempty"`
}

// ServerRoomData names a room, with the members to create it with
// (createRoom) or the reason its members are told (deleteRoom).
type ServerRoomData struct {
	Room    string   `json:"room"`
	Members []string `json:"members,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// ServerMembersReply lists a room's members, sorted, and those of them
// online.
type ServerMembersReply struct {
	Room    string   `json:"room"`
	Members []string `json:"members"`
	Online  []string `json:"online"`
}
