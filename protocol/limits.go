package protocol

// Limits every node enforces. A frame over MaxFrameSize closes the
// connection with close code 1009 (message too big); a text over MaxTextBytes
// gets a 413 reply and the connection stays open.
const (
	MaxFrameSize    = 64 << 10 // bytes of one client WebSocket frame
	MaxTextBytes    = 8 << 10  // bytes of a chat text
	MaxUsernameLen  = 32       // runes
	MinPasswordLen  = 6        // bytes
	MaxPasswordLen  = 72       // bytes; bcrypt ignores what lies beyond
	MaxIDLen        = 64       // bytes of a request id or clientMsgId
	MaxDeviceLen    = 64       // bytes of a device name (login data "device")
	MaxHistoryLimit = 100      // messages per history reply
	DefaultHistory  = 50       // messages when limit is absent
	RecentLen       = 50       // messages kept in a conversation's recent list
	MaxSyncConvs    = 1000     // conversations in one sync request
	MaxSyncMessages = 1000     // messages returned for one conversation by sync
	MaxPeerFrame    = 4 << 20  // bytes of one peer-link frame
	MaxPopular      = 100      // words one popular reply may hold
	DefaultPopular  = 10       // words when n is absent
	MaxRoomMembers  = 10000    // members of one room
	MaxRoomsListed  = 1000     // rooms one rooms reply lists (the first, by name)
	MaxRebuildAhead = 10000    // how far above the server's latest seq a rebuilt message may be
)

// Limits of typing requests, per connection. A typing over them is
// answered like any other and passed on to no one.
const (
	TypingInterval  = 1000 // ms: at most one typing per conversation passed on in this time
	TypingPerSecond = 5    // typing passed on per second over all conversations (bursts of as many)
	MaxTypingConvs  = 64   // conversations a connection's typing limit remembers at once
)
