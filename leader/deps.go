package leader

import (
	"context"
	"iter"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/directory"
	"chatcluster/handler"
	"chatcluster/hotwords"
	"chatcluster/metrics"
	"chatcluster/peerlink"
	"chatcluster/protocol"
	"chatcluster/room"
	"chatcluster/support"
)

// Node is what a term needs of the node it runs on. The node implements
// it; a term calls it from its own goroutines and from Handle, so every
// method is safe from any goroutine and none blocks on the network.
type Node interface {
	// Go runs f in a goroutine the node owns, unless the node is
	// stopping; it reports whether it did. The term's goroutines all
	// start through it.
	Go(f func()) bool

	// DeliverLocal pushes m to the named users connected to the node,
	// encoding it once.
	DeliverLocal(users iter.Seq[string], m *protocol.Message)
	// DeliverPushed hands push, the encoded push of message seq of conv,
	// to the named users connected to the node, once per connection; when
	// again (PeerFrame.Again), not to connections that logged in after
	// the message was written.
	DeliverPushed(users iter.Seq[string], conv string, seq int64, push []byte, again bool)
	// DeliverRaw hands an encoded push that is no message (presence) to
	// the named users connected to the node.
	DeliverRaw(users iter.Seq[string], push []byte)
	// DeliverExcept hands push to every connection of the named users on
	// the node but the connection except: with conv, the encoded push of
	// message seq of conv, as DeliverPushed does; without, another push,
	// as DeliverRaw does.
	DeliverExcept(users iter.Seq[string], except, conv string, seq int64, push []byte, again bool)
	// DeliverSignal hands an encoded push that may be lost (typing) to
	// the named users connected to the node whose send queues have room
	// to spare.
	DeliverSignal(users iter.Seq[string], push []byte)
	// KickLocal closes user's connection conn if it is on the node (every
	// connection of user if conn is ""), with reason in its kicked push.
	KickLocal(user, conn, reason string)

	// RosterFrames are the node's sessions as encoded roster frames of
	// epoch, as the node sends a leader that links to it.
	RosterFrames(epoch int64) [][]byte
	// OnReply hands the node a reply to a request it sent its own
	// term (PeerFrame.Req).
	OnReply(f protocol.PeerFrame)

	// LocalCount is how many users are logged in on the node, and
	// MessagesIn how many messages its clients sent: the node's load, as
	// the other nodes report theirs.
	LocalCount() int
	MessagesIn() int64
}

// Deps is what a term is started with besides its node: the node's
// settings, its logger and metrics, the stores and services the term
// uses (each through the small interface it needs), and the state that
// outlives a term, which the node owns.
type Deps struct {
	ID      string    // the node's id
	Started time.Time // when the node started, published with its load
	Secret  []byte    // the cluster secret, to dial the members with
	// PeerTLS is the node's peer certificate and the cluster's CA, to
	// dial the members over mutual TLS; nil: plain TCP.
	PeerTLS *peerlink.TLS

	PeerQueue      int           // frames queued per link to a member, and held while it has none
	WriteTimeout   time.Duration // per peer write
	RequestTimeout time.Duration // bound for one room request's store calls
	HotWordsReset  time.Duration // how often the hot-word ranking is reset; 0 never
	// SupportGrace is how long an agent holding support conversations may
	// be offline before they go back to the queue.
	SupportGrace time.Duration
	// MultiDevice is the multi login policy: a user may be online on
	// several connections at once, and gets every push on each.
	MultiDevice bool

	Log     zerolog.Logger // the node's
	Metrics *metrics.Node  // the node's

	Cluster   Cluster
	Store     RoomStore
	Convs     ConvLists
	Journal   Journal
	Sessions  Sessions
	Writer    HistoryWriter
	Directory Directory
	HotWords  HotWords
	// Support is where customer service is durable; nil: the cluster
	// answers support requests with 503. Messages reads the messages of
	// its conversations.
	Support  SupportStore
	Messages Messages

	// Events says who may edit and recall which message of a room; NewID
	// gives the ids of the events the leader stores itself (a member's
	// join or leave of a room).
	Events handler.EventPolicy
	NewID  func() string

	// Parked holds pushes for users the leader cannot place yet, and Ups
	// the numbered frames handled per node: both are the node's, handed
	// to each of its terms, so what one term did the next one knows.
	Parked *Parking
	Ups    *UpMarks
}

// Cluster counts a term among the cluster's leaderships (cluster.Cluster).
type Cluster interface {
	ClaimTerm(ctx context.Context, epoch int64) (int64, error)
}

// RoomStore is where room membership is kept (roomstore.Store: MongoDB and
// its copy in Redis), fenced by the leader's epoch. Flush writes to
// MongoDB what was changed while it was away.
type RoomStore interface {
	ClaimRooms(ctx context.Context, epoch int64) error
	Rooms(ctx context.Context) ([]room.Room, error)
	SaveRoom(ctx context.Context, r room.Room, epoch int64) error
	DeleteRoom(ctx context.Context, name string, epoch int64) error
	Flush(ctx context.Context, epoch int64) (int, error)
}

// ConvLists are the users' conversation lists in Redis (chatlog.Log): a
// room is in each member's.
type ConvLists interface {
	AddMembers(ctx context.Context, rooms []room.Room) error
	AddConv(ctx context.Context, user, conv string) error
	RemoveConv(ctx context.Context, user, conv string) error
	RemoveMembers(ctx context.Context, r room.Room) error
}

// Journal stores messages (the node's handler.Journal): a room post is
// stored by the leader, and the push its members get comes with it.
type Journal interface {
	Append(ctx context.Context, m protocol.Message, clientMsgID string, members []string) (handler.Stored, error)
}

// Sessions are the global sessions (session.Store, or session.Devices
// under the multi login policy): the leader removes those of a node that
// left.
type Sessions interface {
	Delete(ctx context.Context, user, conn string) (bool, error)
}

// HistoryWriter tells how many messages wait to be made durable
// (history.Writer), published with the node list.
type HistoryWriter interface {
	Backlog(ctx context.Context) (int64, error)
}

// Directory is where the leader publishes the live-node list for the
// gateway (directory.Directory).
type Directory interface {
	Publish(ctx context.Context, v directory.View) error
}

// HotWords is the hot-word ranking (hotwords.Counter), which the leader
// resets on its schedule.
type HotWords interface {
	LastReset(ctx context.Context) (hotwords.ResetInfo, error)
	Begin(ctx context.Context, node string, epoch int64, now time.Time) (bool, error)
	Reset(ctx context.Context, node string, epoch int64, now time.Time) (bool, error)
}

// SupportStore is where customer service is durable (history.Store): the
// support conversations, fenced by the leader's epoch, and the agents.
type SupportStore interface {
	ClaimSupport(ctx context.Context, epoch int64) error
	OpenSupportConvs(ctx context.Context) ([]support.Conv, error)
	Agents(ctx context.Context) ([]support.Agent, error)
	SaveSupportConv(ctx context.Context, c support.Conv, epoch int64) error
	SaveAgentStatus(ctx context.Context, name, status string) error
	VisitorConvs(ctx context.Context, visitor string, limit int) ([]support.Conv, error)
}

// Messages reads stored messages (the node's handler.Journal): an agent
// given a conversation gets its messages so far, and an edit or recall of
// a room message is checked against the message.
type Messages interface {
	Range(ctx context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error)
	Latest(ctx context.Context, convs []string) (map[string]int64, error)
}
