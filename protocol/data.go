package protocol

// Message is one chat message as clients see it. Seq is assigned once per
// conversation, cluster-wide.
type Message struct {
	ID   string `json:"id"`
	Conv string `json:"conv"`
	Seq  int64  `json:"seq"`
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	Room string `json:"room,omitempty"`
	Text string `json:"text"`
	TS   int64  `json:"ts"` // unix milliseconds
}

// LoginData is the data of a login request: a password or a token.
type LoginData struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Token    string `json:"token"`
}

// LoginReply is the data of a successful login.
type LoginReply struct {
	Username  string `json:"username"`
	Node      string `json:"node"`
	SessionID string `json:"sessionId"`
}

// ChatData is the data of a chat request. Exactly one of To and Room is set.
type ChatData struct {
	To          string `json:"to"`
	Room        string `json:"room"`
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
	More     bool      `json:"more,omitempty"` // more missing messages than one reply holds: sync again
}

// SyncReply is the data of a sync reply.
type SyncReply struct {
	Convs map[string]SyncConv `json:"convs"`
}

// UserInfoData names a user.
type UserInfoData struct {
	Username string `json:"username"`
}

// UserInfoReply tells whether a user is online and where.
type UserInfoReply struct {
	Username  string `json:"username"`
	Online    bool   `json:"online"`
	Node      string `json:"node,omitempty"`
	LoginTime int64  `json:"loginTime,omitempty"` // unix milliseconds
}

// Empty is the data of ping and its reply.
type Empty struct{}

// KickedPush tells a connection why it is being closed.
type KickedPush struct {
	Reason string `json:"reason"`
}

// NodePush tells clients that this node is going away.
type NodePush struct {
	Reconnect bool `json:"reconnect"`
}
