// Package chatlog is the Redis side of message storage: it assigns each
// message its cluster-wide sequence number and records it, in one atomic
// script, in every place the rest of the system reads from:
//
//	<p>seq:<conv>       counter, the conversation's latest seq
//	<p>recent:<conv>    list, the newest protocol.RecentLen messages, newest first
//	<p>pending:<conv>   hash seq -> message, until the history writer has it in MongoDB
//	<p>history          stream of every message, consumed by the history writer
//	<p>convs:<user>     set of the user's conversations (what an empty sync covers)
//	<p>idem:<user>      hash clientMsgId -> "seq ts id conv" of the user's last IdempotencyWindow messages
//	<p>idemq:<user>     list of those clientMsgIds, oldest first, to forget the oldest
//	<p>seqinit          marker: this Redis has held the counters since the cluster began
//
// A message is acknowledged to its sender only after the script ran, so an
// acknowledged message is always readable from Redis or MongoDB.
//
// Appends that arrive together share one pipeline (group commit, see
// commit.go): under load a message costs a fraction of a round trip, and
// without load none waits.
//
// The script touches several keys of one conversation and its users, so it
// needs a single Redis (or Sentinel-managed primary), not Redis Cluster.
package chatlog
