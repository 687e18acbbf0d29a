// Package chaos is the cluster's chaos run: K concurrent clients on three
// nodes send direct and room messages continuously while faults are
// injected one after another (kill -9 of the leader, kill -9 of a follower,
// SIGSTOP of the leader past the ZooKeeper session timeout, a Redis restart
// that loses its data, MongoDB stopped and started, one server of the
// ZooKeeper ensemble killed). After each fault every client reconnects
// through the gateway and syncs. A checker then verifies the full record of
// what was acknowledged and what was received.
//
// The run is TestChaos (chaos_test.go), driven by environment variables:
//
//	CHAT_CHAOS_ROUNDS    rounds of each fault (default 1: the short run of `make test`)
//	CHAT_CHAOS_CLIENTS   concurrent clients K (default 6)
//	CHAT_CHAOS_DURATION  time bound for injecting faults, a Go duration (default 2m + 90s per round)
//	CHAT_CHAOS_MESSAGES  bound on the messages sent (default 20000 per round)
//	CHAT_CHAOS_SEED      seed of the fault order (default: the time; printed)
//	CHAT_CHAOS_FAULTS    only these kinds, comma-separated: kill-leader, kill-follower,
//	                     pause-leader, redis, mongo, zk (default: all)
//	CHAT_CHAOS_REDIS     single (default): one Redis, and the redis fault restarts it empty;
//	                     sentinel: a master, a replica and three Sentinels, and the redis
//	                     fault kills the master with kill -9 (the Sentinels promote the
//	                     replica), then brings it back as the new master's replica;
//	                     cluster: a Redis Cluster of three masters with a replica each,
//	                     and the redis fault kills one master with kill -9 (each in
//	                     turn; the cluster promotes its replica), then brings it back
//	                     as the new master's replica
//	CHAT_CHAOS_SUPPORT   0: leave out the customer-service workload (default: run it)
//
// `make chaos` runs it with 20 rounds. Everything it starts listens on
// loopback only, and it stops by itself: at the end of the schedule, at
// either bound, or after 3 faults in a row that the cluster did not
// recover from. Then it stops sending, brings every client to the latest
// of each of its conversations, checks, and prints the table.
//
// A fault counts as recovered when, within 25 s, every client has
// received as a live push a room message stored after the injection (its
// failover time), and within 45 s every client has reconnected through the
// gateway and synced.
//
// # What the checker verifies
//
// The record holds every acknowledged send (message id, conversation, seq,
// sender, text, and the recipients: the addressee of a direct message,
// every member of the room for a room message, the sender included) and,
// per client, every message that reached it, in the order the client
// processed them: message pushes and the messages of sync replies (and,
// for its own direct messages, the chat reply, which a client also keeps).
//
// The checker counts what a correct client shows, not raw deliveries. Such
// a client (docs/protocol.md, section 7) keeps per conversation an offset,
// the highest seq it holds. A message above the offset is shown and becomes
// the offset; one at or below it is not shown (View). Over that model:
//
//   - lost: an acknowledged message that a recipient never shows;
//   - duplicates shown: a message a recipient shows more than once, by id,
//     or under two ids for one send (the same clientMsgId, which the text
//     carries, stored twice);
//   - out of order: an acknowledged message that a recipient passes over,
//     that is, it shows a later seq of the conversation first (such a
//     message can then never be shown, so it is lost as well), or shows at
//     another seq than the one acknowledged.
//
// # Customer service
//
// Beside the chat clients, a customer-service workload (support.go) runs
// through every fault: visitors arrive through the gateway (one every
// 1.5 s), ask for an agent, write four messages and close; three agents
// of capacity 2 answer each message, and now and then set themselves
// away or drop their connection for 1 to 7 s, around the grace period of
// 4 s. With each fault every visitor and agent reconnects and syncs
// (rebuilding what the server lost), as the chat clients do; agents sync
// once more at the end. Its checker verifies that every message acknowledged in a support
// conversation is stored and shown once, in order, by the other side as
// the server stored it (the agent it was assigned to at the time, or the
// visitor); that every visitor was assigned and never had two open
// conversations; that in every snapshot of the leader's state, taken
// every 250 ms from its admin listener (GET /support), no agent holds more
// than its capacity and a conversation is in one place only; and that at
// the end the agents' own lists agree with the leader. Its table follows
// the chat table.
//
// Deliveries that the client's offsets hide because it already holds the
// message (the same message by push and by sync, a push after a reconnect)
// are counted separately as raw redeliveries: information, not a violation.
package chaos
