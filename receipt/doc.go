// Package receipt keeps read positions, the server side of read receipts:
// how far each user has read each conversation, the highest seq they
// marked read. A position only rises.
//
// Redis holds them first, one hash per conversation whose fields are the
// users and whose values their positions:
//
//	<p>{s}read:<conv>   hash user -> seq
//
// {s} is the hash tag of the conversation's shard (package keyspace), as
// for every key of the conversation in package chatlog: on a Redis Cluster
// the hash shares the slot of the conversation's counter and of its
// shard's seqinit marker, which the scripts read together with it.
//
// MongoDB holds their durable copy (Durable, history.Store's
// read_positions), written behind. The script that raises a position also
// records it in its shard's queue, a hash in Redis under the same hash
// tag:
//
//	<p>{s}readq   hash "<conv>\x00<user>" -> seq (the highest)
//
// and one writer among the nodes, the one holding a lease in Redis
// (LeaseKey; the others stand by and take over within about a lease when
// it dies), writes the queues to MongoDB every few seconds, a few
// positions per write, and takes each off its queue unless it rose
// meanwhile. A node killed after a read therefore loses nothing Redis
// still holds. The queues are bounded; past its bound a shard's new
// positions are not made durable (logged), and Redis still has them. So a
// request never waits for MongoDB to write, and MongoDB being down delays
// the durable copy, never a read. What rose in the last few seconds
// before Redis lost its data goes back with it.
//
// When Redis has no position for a user (it lost its data: restarted
// empty, flushed), the Store reads MongoDB's and puts it back in Redis
// before it answers; the shard's seqinit marker, present only where Redis
// has held everything since the cluster began, spares that read for a user
// who never read the conversation. While MongoDB does not answer, a
// position sync asks for counts as 0 and is not put back (the next sync
// asks again), and a read starts from 0: Redis then holds that read's
// position, a lower one than MongoDB's perhaps, and MongoDB's is never
// lowered by it. A position made durable after Redis lost it but before it
// was read back can come back a little behind, until the user's next read.
package receipt
