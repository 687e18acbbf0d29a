// Package chatlog is the Redis side of message storage: it assigns each
// message its cluster-wide sequence number and records it, in one atomic
// script, in every place the rest of the system reads from. {s} is the
// hash tag of the conversation's shard (package keyspace), so the script
// touches one Redis Cluster slot:
//
//	<p>{s}seq:<conv>       counter, the conversation's latest seq
//	<p>{s}recent:<conv>    list, the newest protocol.RecentLen messages, newest first
//	<p>{s}pending:<conv>   hash seq -> message, until the history writer has it in MongoDB
//	<p>{s}history          the shard's stream of messages, consumed by the history writer
//	<p>{s}idem:<user>      hash clientMsgId -> "seq ts id conv" of the user's last IdempotencyWindow messages in the shard
//	<p>{s}idemq:<user>     list of those clientMsgIds, oldest first, to forget the oldest
//	<p>{s}seqinit          marker: this Redis has held the shard's counters since the cluster began
//
// and, in the same pipeline ahead of the script, one slot each:
//
//	<p>convs:<user>        set of the user's conversations (what an empty sync covers)
//
// A message is acknowledged to its sender only after the script and the
// additions ran, so an acknowledged message is always readable from Redis
// or MongoDB, and listed for its members.
//
// Appends that arrive together share one pipeline (group commit, see
// commit.go): under load a message costs a fraction of a round trip, and
// without load none waits. RunLazy lets other writes that may wait a
// little (read positions) ride in those pipelines.
//
// MigrateLayout moves the keys of the layout before the shards, once.
package chatlog
