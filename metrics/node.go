package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatcluster/history"
)

// NodeSources are the values a node's metrics read at scrape time. Every
// field is optional: a nil one leaves its metric out. They are called from
// the scraping goroutine and must be safe for that.
type NodeSources struct {
	Connections func() int            // open client WebSocket connections
	LoggedIn    func() int            // logged-in client connections
	UplinkQueue func() int            // frames waiting for the leader
	PeerQueues  func() map[string]int // frames queued per peer link, by the other node's id
	IsLeader    func() bool
	Epoch       func() int64 // the highest leader epoch the node has seen
	Rooms       func() int   // rooms the node holds as leader; 0 when it does not lead

	// Backlog reads the history backlog (a Redis round trip): it is called
	// at most once per BacklogTTL, bounded by BacklogTimeout.
	Backlog func(context.Context) (int64, error)
	History func() history.WriterStats // the node's history writer's counters
}

// How often, at most, and how long a scrape reads the history backlog.
const (
	BacklogTTL     = time.Second
	BacklogTimeout = time.Second
)

// Node is a chat node's collectors. The counters are updated by the node
// directly; they are safe from any goroutine.
type Node struct {
	*Deps

	ConnectionsOpened prometheus.Counter // WebSocket connections accepted
	PushRepeated      prometheus.Counter // message pushes not sent: the connection had it already
	PushAgainSkipped  prometheus.Counter // pushes handed over again not sent: the connection logged in after the message
	RedisWaitShort    prometheus.Counter // pipelines of messages acknowledged before --redis-wait-replicas replicas held them
	SlowDisconnects   prometheus.Counter // clients closed as too slow to read what they are sent
	ClientFramesOut   prometheus.Counter // frames written to client WebSockets
	ClientWrites      prometheus.Counter // writes on client sockets: frames out per write is how well they batch

	MessagesInDM   prometheus.Counter // direct messages stored for this node's clients
	MessagesInRoom prometheus.Counter // room messages stored for this node's clients

	PushMessage  prometheus.Counter // message pushes queued to local clients
	PushMember   prometheus.Counter // member pushes (a room's join or leave event) queued to local clients
	PushPresence prometheus.Counter
	PushKicked   prometheus.Counter
	PushNode     prometheus.Counter

	RouteDropped     prometheus.Counter // recipients dropped: uplink queue full
	RouteParkExpired prometheus.Counter // leader: pushes for recipients it could not place in time
	Refused          prometheus.Counter // messages refused because the cluster is overloaded
	Overloaded       prometheus.Gauge   // leader: 1 while it says it is overloaded
	UplinkFrames     prometheus.Counter // frames queued on the link to the leader
	UplinkDropped    prometheus.Counter // frames dropped: uplink queue full
	UplinkResent     prometheus.Counter // frames handed again to a new link: the lost one had not acknowledged them
	PeerResent       prometheus.Counter // as leader: frames a node sent again that were already handled

	LeaderFramesOut     prometheus.Counter // frames the leader queued to node links
	LeaderFramesDropped prometheus.Counter // frames the leader had no usable link for

	ElectionsWon  prometheus.Counter // leader terms this node began
	LeaderChanges prometheus.Counter // changes of leader (id or epoch) this node saw
	ZKConnected   prometheus.Gauge   // 1 while the ZooKeeper session is live

	// Customer service, as leader (0 on the other nodes).
	SupportQueue       prometheus.Gauge     // conversations waiting for an agent
	SupportOldestWait  prometheus.Gauge     // seconds the oldest one has waited
	SupportOpen        prometheus.Gauge     // conversations assigned to an agent
	SupportAgentsReady prometheus.Gauge     // agents enabled, available and online
	SupportUtilisation prometheus.Gauge     // conversations held over the capacity of those agents
	SupportWait        prometheus.Histogram // seconds from queued to assigned
	SupportAssigned    prometheus.Counter   // assignments (transfers included)
	SupportRequeued    prometheus.Counter   // conversations put back in the queue (agent away, gone or disabled)
	SupportClosed      prometheus.Counter   // conversations closed

	// Typing indicators and read receipts.
	PushTyping    prometheus.Counter // typing pushes queued to local clients
	PushRead      prometheus.Counter // read pushes queued to local clients
	SignalDropped prometheus.Counter // typing pushes dropped: a send queue or a link had no room to spare

	leaderIn      map[string]prometheus.Counter // by peer frame type; read-only after NewNode
	leaderInOther prometheus.Counter
}

// LeaderFrameTypes are the peer frame types the leader counts by name;
// anything else counts as "other".
var LeaderFrameTypes = []string{"route", "kick", "room", "support", "online", "roster", "load", "signal"}

// NewNode registers a node's metrics in reg and returns them.
func NewNode(reg prometheus.Registerer, src NodeSources) *Node {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	messagesIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "messages_in_total",
		Help: "Chat messages from this node's clients that were stored, by kind (dm, room); a resent clientMsgId does not count again.",
	}, []string{"kind"})
	pushes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "pushes_out_total",
		Help: "Pushes queued to this node's clients, by kind (message, presence, kicked, node, typing, read); one per recipient connection.",
	}, []string{"kind"})
	leaderIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "leader_frames_in_total",
		Help: "Peer frames handled by this node as leader, from other nodes and its own, by type.",
	}, []string{"type"})
	reg.MustRegister(messagesIn, pushes, leaderIn)

	n := &Node{
		Deps: newDeps(reg, true),

		ConnectionsOpened: counter("connections_opened_total", "Client WebSocket connections accepted."),
		PushRepeated:      counter("push_repeated_total", "Message pushes not sent because the connection had been pushed that message (or a later one of its conversation) already: the cluster handed it over again after a lost link."),
		RedisWaitShort:    counter("redis_wait_short_total", "Pipelines of stored messages that fewer replicas than --redis-wait-replicas confirmed within --redis-wait-timeout; their messages were acknowledged anyway and would be lost with the master before reaching a replica (clients can give them back: rebuild)."),
		PushAgainSkipped:  counter("push_again_skipped_total", "Message pushes handed over again after a lost link to the leader that were not given to a connection which logged in after the message was written: its client gets the message from its sync after login."),
		SlowDisconnects:   counter("client_slow_disconnects_total", "Client connections closed as too slow to read what they are sent."),
		ClientFramesOut:   counter("client_frames_out_total", "Frames written to client WebSockets: replies and pushes."),
		ClientWrites:      counter("client_writes_total", "Writes on client sockets, each a system call: the frames out per write is how well they batch."),

		MessagesInDM:   messagesIn.WithLabelValues("dm"),
		MessagesInRoom: messagesIn.WithLabelValues("room"),

		PushMessage:  pushes.WithLabelValues("message"),
		PushMember:   pushes.WithLabelValues("member"),
		PushPresence: pushes.WithLabelValues("presence"),
		PushKicked:   pushes.WithLabelValues("kicked"),
		PushNode:     pushes.WithLabelValues("node"),

		RouteDropped: counter("route_dropped_total", "Recipients on other nodes a message was not routed to because the queue to the leader was full (they get it by sync)."),
		Refused:      counter("overload_refused_total", "Messages this node refused with 503 and a retryAfter because the cluster could not deliver them as fast as they came (as leader: room posts refused)."),
		Overloaded: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "leader_overloaded",
			Help: "1 while this node, as leader, says it is overloaded (a link to a node with over 4096 frames queued, or half the parking taken): the nodes refuse new messages."}),
		RouteParkExpired: counter("route_parked_expired_total", "Leader: message pushes for recipients it could not place on a node within the parking time, or that found parking full (they get them by sync)."),
		UplinkFrames:     counter("uplink_frames_total", "Frames this node queued on its peer link to the leader: routed messages, kicks, room requests, logins and logouts, rosters, loads."),
		UplinkDropped:    counter("uplink_dropped_total", "Frames for the leader dropped because the uplink queue was full."),
		UplinkResent:     counter("uplink_resent_total", "Frames for the leader handed over again because the link they went out on was lost before the leader acknowledged them."),
		PeerResent:       counter("peer_resent_total", "As leader: frames a node sent again that this node had already handled (acknowledged again, not handled twice)."),

		LeaderFramesOut:     counter("leader_frames_out_total", "Frames this node, as leader, queued to the links of other nodes."),
		LeaderFramesDropped: counter("leader_frames_dropped_total", "Frames this node, as leader, dropped for want of a usable link to their node."),

		ElectionsWon:  counter("elections_won_total", "Leader terms this node began."),
		LeaderChanges: counter("leader_changes_total", "Changes of the leader (node or epoch) this node saw in ZooKeeper."),
		ZKConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "zookeeper_connected",
			Help: "1 while the node has a live ZooKeeper session, else 0.",
		}),

		SupportQueue: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "support_queue_length",
			Help: "Leader: support conversations waiting for an agent; 0 on the other nodes."}),
		SupportOldestWait: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "support_oldest_wait_seconds",
			Help: "Leader: how long the oldest waiting support conversation has waited."}),
		SupportOpen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "support_assigned",
			Help: "Leader: support conversations assigned to an agent now."}),
		SupportAgentsReady: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "support_agents_ready",
			Help: "Leader: agents enabled, available and online."}),
		SupportUtilisation: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "support_agent_utilisation",
			Help: "Leader: conversations the ready agents hold over their capacity, 0 to 1."}),
		SupportWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "support_wait_seconds",
			Help:    "Leader: how long a support conversation waited in the queue before an agent was assigned.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}}),
		SupportAssigned: counter("support_assignments_total", "Leader: support conversations given to an agent (a transfer counts)."),
		SupportRequeued: counter("support_requeued_total", "Leader: support conversations put back at the front of the queue because their agent went away, did not come back in time, or was disabled."),
		SupportClosed:   counter("support_closed_total", "Leader: support conversations closed."),

		PushTyping:    pushes.WithLabelValues("typing"),
		PushRead:      pushes.WithLabelValues("read"),
		SignalDropped: counter("signal_dropped_total", "Typing pushes dropped, on this node or by it as leader, because a client's send queue or a peer link had no room to spare (they matter less than anything else queued there)."),

		leaderIn:      make(map[string]prometheus.Counter, len(LeaderFrameTypes)),
		leaderInOther: leaderIn.WithLabelValues("other"),
	}
	reg.MustRegister(n.ZKConnected, n.Overloaded, n.SupportQueue, n.SupportOldestWait, n.SupportOpen,
		n.SupportAgentsReady, n.SupportUtilisation, n.SupportWait)
	for _, t := range LeaderFrameTypes {
		n.leaderIn[t] = leaderIn.WithLabelValues(t)
	}

	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, f))
	}
	intGauge := func(name, help string, f func() int) {
		if f != nil {
			gauge(name, help, func() float64 { return float64(f()) })
		}
	}
	intGauge("connections", "Open client WebSocket connections, logged in or not.", src.Connections)
	intGauge("connections_logged_in", "Logged-in client connections.", src.LoggedIn)
	intGauge("uplink_queue_length", "Frames queued for the leader (the router's uplink queue).", src.UplinkQueue)
	intGauge("rooms", "Rooms this node holds as leader; 0 when it does not lead.", src.Rooms)
	if src.IsLeader != nil {
		gauge("is_leader", "1 while this node leads the cluster, else 0.", func() float64 {
			if src.IsLeader() {
				return 1
			}
			return 0
		})
	}
	if src.Epoch != nil {
		gauge("leader_epoch", "The highest leader epoch this node has seen (the ZooKeeper czxid of the leader's election znode).",
			func() float64 { return float64(src.Epoch()) })
	}
	if src.PeerQueues != nil {
		reg.MustRegister(&labelled{
			desc: prometheus.NewDesc(Namespace+"_peer_queue_length",
				"Frames queued on a peer link, by the node at the other end: on the leader its links to the nodes, on a node its link to the leader.",
				[]string{"peer"}, nil),
			read: src.PeerQueues,
		})
	}
	if src.Backlog != nil {
		c := &cached{read: src.Backlog, ttl: BacklogTTL, timeout: BacklogTimeout, errs: counter(
			"history_backlog_read_errors_total", "Failed reads of the history backlog (chat_history_backlog then keeps its last value).")}
		gauge("history_backlog", "Messages in the Redis history stream not yet written to MongoDB, cluster-wide (read at most once a second).", c.value)
	}
	if src.History != nil {
		stat := func(name, help string, f func(history.WriterStats) int64) {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help},
				func() float64 { return float64(f(src.History())) }))
		}
		stat("history_written_total", "Messages this node's history writer wrote to MongoDB (a redelivered one counts again).",
			func(s history.WriterStats) int64 { return s.Written })
		stat("history_batches_total", "Successful bulk writes of this node's history writer.",
			func(s history.WriterStats) int64 { return s.Batches })
		stat("history_failures_total", "Failed bulk writes of this node's history writer (each is retried).",
			func(s history.WriterStats) int64 { return s.Failures })
		stat("history_conflicts_total", "Messages dropped by the history writer because their seq held another message.",
			func(s history.WriterStats) int64 { return s.Conflicts })
		stat("history_malformed_total", "History stream entries that were not a message, dropped.",
			func(s history.WriterStats) int64 { return s.Malformed })
	}
	return n
}

// LeaderFrameIn returns the counter of peer frames of type typ handled by
// the leader. It does no label lookup.
func (n *Node) LeaderFrameIn(typ string) prometheus.Counter {
	if c, ok := n.leaderIn[typ]; ok {
		return c
	}
	return n.leaderInOther
}
