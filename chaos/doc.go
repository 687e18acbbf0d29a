// Package chaos is the cluster's chaos run: K concurrent clients on three
// nodes send direct and room messages continuously, edit and recall their
// own, mark conversations read and signal typing, while faults are
// injected one after another (kill -9 of the leader, kill -9 of a follower,
// SIGSTOP of the leader past the ZooKeeper session timeout, a Redis restart
// that loses its data, MongoDB stopped and started, one server of the
// ZooKeeper ensemble killed). After each fault every client reconnects
// through the gateway and syncs, and at a checkpoint every client's final
// view of each of its conversations is compared with every other
// member's and with the server's. A checker then verifies the full record
// of what was acknowledged and what was received.
//
// # Devices
//
// The cluster runs under the multi login policy (docs/protocol.md,
// section 1.11): a user may be logged in on several devices at once, and
// some users of the run are. Of the K clients, the first
// CHAT_CHAOS_DEVICES users (default 2) have two: clients c1.d1 and c1.d2
// are user c1 on devices d1 and d2; the other users have one client,
// named like the user, on device d1. Every client is a connection of its
// own with its own device name in its login data, logs in through the
// gateway and reconnects after faults on its own (the two devices of a
// user may land on different nodes), keeps its own offsets and view, and
// runs the whole workload. So K = 6 is 4 users, 2 of them on two devices.
// CHAT_CHAOS_LOGIN=single runs the cluster under the single policy
// instead, every user on one client without a device name.
//
// A client that logs in again with its device name replaces its own
// earlier connection: if that one still gets a kicked push, with reason
// "logged in again on this device" ("logged in elsewhere" under single),
// while the client is leaving it (reconnecting), it is a reconnect race
// and counts as such. Any other kick (of a live connection, or "logged in
// on more than 5 devices", which two devices never reach) is a violation,
// an unexpected kick.
//
// # The workload
//
// Each client's actions, one at a time with 25 to 75 ms between them:
// about 10% edit one of its 16 newest acknowledged messages (direct or
// room) with a new text unique to the edit; about 5% recall one it sent
// less than 60 s ago (the servers' recall window is 2 min); about 10% mark
// one of its conversations read at its offset there; about 3% signal
// typing (not stored: an error is only logged); the rest send messages,
// 40% of them to a room. An edit or recall with no message to take is a
// message instead. Edits and recalls are resent after errors that may
// have left them unstored, as messages are (CHAT_CHAOS_MESSAGES bounds
// the three together).
//
// The run is TestChaos (chaos_test.go), driven by environment variables:
//
//	CHAT_CHAOS_ROUNDS    rounds of each fault (default 1: the short run of `make test`)
//	CHAT_CHAOS_CLIENTS   concurrent clients K: devices (default 6)
//	CHAT_CHAOS_LOGIN     the cluster's login policy, CHAT_LOGIN_POLICY: multi (default) or single
//	CHAT_CHAOS_DEVICES   users with a second device among the K clients (default 2 under multi,
//	                     at most K/2 and leaving at least 2 users; must be 0 under single)
//	CHAT_CHAOS_DURATION  time bound for injecting faults, a Go duration (default 2m + 90s per round;
//	                     the checkpoints' time does not count)
//	CHAT_CHAOS_MESSAGES  bound on the messages, edits and recalls sent (default 20000 per round)
//	CHAT_CHAOS_SEED      seed of the fault order (default: the time; printed)
//	CHAT_CHAOS_LOGS      a folder to copy the run's logs into at the end (default: none; the
//	                     test's temporary folders are removed)
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
// # Checkpoints
//
// After each fault (once the cluster recovered and is whole) and at the
// end, the run pauses: every client finishes its action in flight, then
// syncs until it is at the latest of each of its conversations. Each
// client's final view of a conversation is what it shows, by seq, with
// the edits and recalls it holds applied in seq order: per message its
// text, edited or not, or that it is recalled (View.Final). The
// checkpoint also reads every conversation of each client from the
// server, by a sync on that client's connection: every message in its
// final state, as the server applies the events (ServerState). After a
// fault, a checkpoint reads and compares the newest 1,000 seqs of each
// conversation, from a floor common to its members (Floors), so that its
// cost does not grow with the history; the checkpoint at the end reads
// and compares everything, from seq 0. In every conversation, each
// member's final view and the server's answer to each member must equal
// the server's answer to the first member: a message at a seq on one
// side and not the other, or in another state, counts as a final view
// differing (CompareSnapshot). If the views
// differ, the clients settle once more and are compared again (something
// the server stored after they settled, a request answered late, is no
// divergence); the table counts checkpoints compared twice. A checkpoint
// that cannot be taken (a client does not finish its action within 75 s,
// or does not settle within a minute) is listed with its reason.
//
// Read positions: the record keeps per user and conversation the highest
// read position acknowledged, which every device of the user raises. A
// read reply below the seq sent or below a position acknowledged before
// the read was sent (a reply to the user's other device may come in
// between), and at a checkpoint a sync of any device of the user whose
// read (the user's own) or, in a direct conversation, a sync of any
// device of the other user whose peerRead is below it, count as read
// positions that went back. A node writes read positions to MongoDB
// behind, every 3 s or so, from a queue in Redis, so a Redis fault may take away the rises of
// its last few seconds: a position acknowledged less than
// ReadDurableAfter (12 s) before a Redis fault does not count against
// what the server gives after it, the one before it does.
//
// # What the checker verifies
//
// The record holds every acknowledged send (message id, conversation, seq,
// sender, the device that sent it, text, and the recipients: the
// addressee of a direct message, every member of the room for a room
// message, the sender included) and, per client (device), every message
// that reached it, in the order the client processed them: message pushes
// and the messages of sync replies (and, for its own direct messages, the
// chat reply, which a client also keeps). A message must reach every
// device of its recipients, and a direct one also every other device of
// its sender (the sending one has the reply): the expected deliveries are
// (message, device) pairs, and each device is checked over its own view.
// An acknowledged edit or recall is an event with its own id and seq
// (docs/protocol.md, section 1.12) and is recorded as a send, with the
// recipients of a message of its conversation, and as it reaches clients:
// everything below about messages holds for them too, so an acknowledged
// edit or recall a recipient never shows is lost.
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
//     another seq than the one acknowledged;
//   - final views differing: a (client, message) pair whose final state
//     at the end is not the one every event known (acknowledged, or shown
//     by any client, each once by id) leads to, or differs from the
//     server's at a checkpoint, or is not recalled though the server
//     answered a recall sent again "recalled already";
//   - read positions that went back (see Checkpoints);
//   - unexpected kicks (see Devices).
//
// Events sent again: an edit has no clientMsgId, so one sent again after
// its reply was lost may be stored twice, as two events with one text.
// That is no duplicate: each is an event of its own (the first counts as
// shown, not acknowledged), the final view is the same, and the table
// counts such edits as stored twice. A recall sent again after its reply
// was lost is answered 409 "recalled already": the first landed, though
// the record holds no acknowledgement of it; the message must be recalled
// in every final view.
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
