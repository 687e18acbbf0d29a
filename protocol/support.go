package protocol

import (
	"strconv"
	"strings"
)

// Customer service (docs/protocol.md §4.13 to §4.18, §5.5 to §5.8): a
// visitor opens a support conversation, waits in the leader's queue, and is
// assigned to an agent, a registered user the operator made an agent.

// Support actions.
const (
	ActionSupport         = "support"         // visitor: open my conversation, or resume the open one
	ActionSupportClose    = "supportClose"    // visitor or its agent: close a conversation
	ActionSupportTransfer = "supportTransfer" // agent: hand a conversation to another agent
	ActionSupportConvs    = "supportConvs"    // agent: my open conversations and the queue
	ActionSupportHistory  = "supportHistory"  // agent: a visitor's messages over all their conversations
	ActionAgentStatus     = "agentStatus"     // agent: set myself available or away, and read my state
)

// Support pushes.
const (
	PushQueue      = "queue"      // visitor: my place in the queue changed
	PushAssigned   = "assigned"   // agent: a conversation is mine now (with its messages); visitor: an agent took mine
	PushUnassigned = "unassigned" // agent: a conversation is no longer mine (transferred, or back in the queue)
	PushClosed     = "closed"     // visitor and agent: the conversation is closed
)

// Support conversation states.
const (
	SupportQueued   = "queued"
	SupportAssigned = "assigned"
	SupportClosed   = "closed"
)

// Agent statuses.
const (
	AgentAvailable = "available"
	AgentAway      = "away"
)

// SupportPrefix begins the id of a support conversation: cs:<visitor>:<n>,
// the visitor's n-th conversation.
const SupportPrefix = "cs:"

// VisitorPrefix begins every visitor id. No registered name can hold it
// (ValidName excludes it), so a visitor never shares an id with a user.
const VisitorPrefix = "~"

// MaxVisitorIDLen bounds a visitor id, in bytes.
const MaxVisitorIDLen = 41

// IsVisitor reports whether id is a visitor's (it begins with
// VisitorPrefix; ValidVisitor checks the rest).
func IsVisitor(id string) bool { return strings.HasPrefix(id, VisitorPrefix) }

// ValidVisitor reports whether s is a well-formed visitor id: "~" and 1 to
// 40 lowercase letters or digits.
func ValidVisitor(s string) bool {
	if !IsVisitor(s) || len(s) < 2 || len(s) > MaxVisitorIDLen {
		return false
	}
	for _, r := range s[1:] {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// SupportConvID is the id of visitor's n-th support conversation.
func SupportConvID(visitor string, n int64) string {
	return SupportPrefix + visitor + ":" + strconv.FormatInt(n, 10)
}

// ParseSupportConv splits a support conversation id into its visitor and
// number; ok is false for anything else.
func ParseSupportConv(conv string) (visitor string, n int64, ok bool) {
	rest, found := strings.CutPrefix(conv, SupportPrefix)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", 0, false
	}
	visitor, num := rest[:i], rest[i+1:]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != num || !ValidVisitor(visitor) {
		return "", 0, false
	}
	return visitor, n, true
}

// Limits of the visitor API.
const (
	MaxVisitorNameLen  = 64  // runes of a visitor's display name
	MaxChannelLen      = 16  // bytes of a visitor's channel ("web", "app")
	MaxSupportHistory  = 200 // messages in one supportHistory page
	MaxSupportConvs    = 100 // conversations listed in one reply
	MaxAgentCapacity   = 100 // conversations one agent may hold at once
	DefaultSupportPage = 50
)

// VisitorRequest is the body of POST /api/visitor; both fields may be
// left out.
type VisitorRequest struct {
	Name    string `json:"name"`
	Channel string `json:"channel"`
}

// VisitorReply is the answer to POST /api/visitor: the new visitor and the
// token its WebSocket login uses.
type VisitorReply struct {
	Visitor string `json:"visitor"`
	Token   string `json:"token"`
	Name    string `json:"name"`
	Channel string `json:"channel"`
}

// VisitorTokenPrefix begins every visitor token, so a login tells it from
// a user's session token without a lookup.
const VisitorTokenPrefix = "vt_"

// SupportConv is one support conversation as visitors and agents see it.
type SupportConv struct {
	Conv     string   `json:"conv"`
	Visitor  string   `json:"visitor"`
	Name     string   `json:"name,omitempty"`    // the visitor's display name
	Channel  string   `json:"channel,omitempty"` // where the visitor came from
	State    string   `json:"state"`             // queued, assigned or closed
	Agent    string   `json:"agent,omitempty"`   // assigned: the agent
	Position int      `json:"position,omitempty"`
	Waiting  int      `json:"waiting,omitempty"`
	Opened   int64    `json:"opened"`             // unix ms
	Queued   int64    `json:"queued,omitempty"`   // queued: since when it waits, unix ms
	Assigned int64    `json:"assigned,omitempty"` // assigned: since when, unix ms
	Closed   int64    `json:"closed,omitempty"`   // closed: when, unix ms
	ClosedBy string   `json:"closedBy,omitempty"` // closed: who closed it ("" for the system)
	Agents   []string `json:"agents,omitempty"`   // every agent it was assigned to, in order
	Latest   int64    `json:"latest"`             // its latest seq
}

// SupportData is the data of support: empty to open a conversation (or
// resume the open one); with Conv, the one the client shows, to resume it
// only: when it was closed meanwhile the reply says so, and no new one is
// opened.
type SupportData struct {
	Conv string `json:"conv"`
}

// ConvData names a conversation (supportClose).
type ConvData struct {
	Conv string `json:"conv"`
}

// TransferData is the data of supportTransfer.
type TransferData struct {
	Conv string `json:"conv"`
	To   string `json:"to"`
}

// AgentStatusData is the data of agentStatus: "available", "away", or ""
// to change nothing.
type AgentStatusData struct {
	Status string `json:"status"`
}

// QueueInfo is the state of the queue: how many conversations wait, and
// how long the oldest has waited, in milliseconds.
type QueueInfo struct {
	Length     int   `json:"length"`
	OldestWait int64 `json:"oldestWait"`
}

// AgentState is an agent's state, the reply of agentStatus.
type AgentState struct {
	Agent    string    `json:"agent"`
	Status   string    `json:"status"`
	Capacity int       `json:"capacity"`
	Open     int       `json:"open"` // conversations assigned to the agent now
	Queue    QueueInfo `json:"queue"`
}

// SupportConvsReply is the reply of supportConvs.
type SupportConvsReply struct {
	Convs []SupportConv `json:"convs"`
	Agent AgentState    `json:"agent"`
}

// SupportHistoryData is the data of supportHistory: the visitor, and a page
// (Conv and Before, as the previous reply's Next gave them; both empty: the
// newest).
type SupportHistoryData struct {
	Visitor string `json:"visitor"`
	Conv    string `json:"conv"`
	Before  int64  `json:"before"`
	Limit   int    `json:"limit"`
}

// HistoryCursor is where the next, older page of supportHistory begins.
type HistoryCursor struct {
	Conv   string `json:"conv"`
	Before int64  `json:"before"`
}

// SupportHistoryReply is the reply of supportHistory: the visitor's
// conversations, newest first, and a page of messages, oldest first; Next
// is nil when there is nothing older.
type SupportHistoryReply struct {
	Visitor  string         `json:"visitor"`
	Convs    []SupportConv  `json:"convs"`
	Messages []Message      `json:"messages"`
	Next     *HistoryCursor `json:"next"`
}

// QueuePush tells a visitor its place in the queue: Position 1 is next;
// Waiting is how many conversations wait in all.
type QueuePush struct {
	Conv     string `json:"conv"`
	Position int    `json:"position"`
	Waiting  int    `json:"waiting"`
}

// AssignedPush tells an agent a conversation is theirs (with the visitor
// and the messages so far, the last RecentLen) and the visitor who took it.
type AssignedPush struct {
	SupportConv
	Messages []Message `json:"messages,omitempty"`
	From     string    `json:"from,omitempty"` // a transfer: the agent who handed it on
}

// UnassignedPush tells an agent a conversation is no longer theirs:
// "transferred" (to To), "requeued" (back in the queue: the agent went
// away or did not come back in time) or "disabled".
type UnassignedPush struct {
	Conv   string `json:"conv"`
	Reason string `json:"reason"`
	To     string `json:"to,omitempty"`
}

// ClosedPush tells the visitor and the agent a conversation is closed, and
// by whom ("" for the system).
type ClosedPush struct {
	Conv string `json:"conv"`
	By   string `json:"by"`
}

// SupportPeer is the support part of a support peer frame (PeerSupport):
// what the request needs besides user and conversation, or what the
// leader answers.
type SupportPeer struct {
	Name    string `json:"name,omitempty"`
	Channel string `json:"channel,omitempty"`
	Status  string `json:"status,omitempty"`
	To      string `json:"to,omitempty"`
	Visitor string `json:"visitor,omitempty"`

	Conv   *SupportConv  `json:"conv,omitempty"`
	Convs  []SupportConv `json:"convs,omitempty"`
	Agent  *AgentState   `json:"agent,omitempty"`
	Closed bool          `json:"closed,omitempty"` // close: it was closed before
}

// Support request operations, in PeerFrame.Op of a PeerSupport frame.
const (
	SupportOpen     = "open"
	SupportPost     = "post"
	SupportCloseOp  = "close"
	SupportTransfer = "transfer"
	SupportStatus   = "status"
	SupportList     = "list"
	SupportVisitor  = "visitor"
)

// SupportSnapshot is the leader's whole customer-service state at one
// instant, as the node's admin listener serves it (GET /support): for
// operators, and for the checker of the chaos run.
type SupportSnapshot struct {
	Node   string          `json:"node"`
	Epoch  int64           `json:"epoch"`
	Taken  int64           `json:"taken"` // unix ms
	Queue  []SupportConv   `json:"queue"` // in queue order
	Held   []SupportConv   `json:"held"`  // assigned, by agent then time
	Agents []AgentSnapshot `json:"agents"`
}

// AgentSnapshot is an agent in a SupportSnapshot.
type AgentSnapshot struct {
	Agent    string `json:"agent"`
	Capacity int    `json:"capacity"`
	Disabled bool   `json:"disabled,omitempty"`
	Status   string `json:"status"`
	Online   bool   `json:"online"`
	Open     int    `json:"open"`
}
