// Package history is the MongoDB side of the chat service: users, rooms,
// the full message history, and the writer that moves messages from the
// Redis history stream into MongoDB.
//
// Store is the narrow interface to MongoDB. For messages it uses only what
// every MongoDB-wire server of the project makes atomic and cheap: inserts
// of documents that are never changed afterwards, a unique _id, and lookups
// by _id. On the embedded SQLite-backed server (deploy/mongostore) a
// document costs about the same whatever it holds, an update is a read and
// a replace that a concurrent update can undo, and a filter on anything
// but _id reads the whole collection.
//
// # Layout
//
// In the database given to Open:
//
//	users          {_id: name, hash, created, key?, aliasOf?}
//	rooms          {_id: name, members, epoch, updated}
//	user_conv_lists {_id: user + "/" + k, user, convs}: the direct and
//	               support conversations of each user, in 8 documents by
//	               a hash of the conversation, written with the messages
//	               (before them); user_convs of an earlier build is read
//	               once to fill it (lookups.go)
//	message_chunks {_id: conv + "/" + block + "/" + k, conv, block, msgs, edits?}
//	message_tops   {_id: conv + "/" + k, conv, block}
//	read_positions {_id: conv + " " + user, conv, user, seq, updated}:
//	               how far each user has read each conversation, the
//	               durable copy of package receipt's (reads.go), the one
//	               kind of document here that is updated in place
//
// A conversation's seqs are cut into blocks of BlockSize (100): block b
// holds seqs 100b to 100b+99. A block is stored as chunks k = 0, 1, 2, ...
// without a hole; msgs is the list of the messages the chunk added to the
// block, each the message's JSON (protocol.Message) as a string, in seq
// order. A write adds one chunk to every block it has messages for, so
// under load a chunk carries every message the writer read for that block
// in one batch. Chunks are only ever inserted; Forget, a tool for tests and
// repairs, is the one thing that rewrites one (it keeps it, possibly
// empty, so that no k goes missing).
//
// Edits and recalls are messages too (protocol.Message.Kind), stored at
// their own seqs. Messages are never changed in place: instead, after a
// write has stored such events, it adds a copy of each to the block of the
// message it changes (Ref), in the edits of that block's next chunk. A
// block read thus brings every change made to its messages, and a page of
// history is put in its final state from the blocks it reads anyway
// (Messages; Page gives the copies apart, Events those of given seqs).
//
// message_tops is each conversation's log of its newest block: records
// k = 0, 1, 2, ... without a hole, block rising with k. Before a write adds
// messages above the newest block recorded, it appends a record of the new
// block, in an insert of its own before the chunks, so that no chunk is ever
// stored above the last record.
//
// # Writing
//
// UpsertMessages groups the messages by block and inserts the next chunk of
// each block in one unordered insert (after, when needed, one insert of
// newest-block records). The Store remembers, for the blocks it wrote
// lately, how many chunks each has and a hash of the id at each seq, so a
// batch costs those one or two inserts and no read. Two writers that
// insert the same chunk _id collide: the loser reads the chunks it did not
// know, drops what they hold, and inserts the rest as the next chunk.
// Writing a message again at its seq (a redelivery) stores nothing; a
// message whose seq holds another id is a conflict (ConflictError): the
// stored one wins. The copies of events are written after the events, in a
// second insert, only for events stored (not in conflict), and a copy that
// a block holds already is not added again; the writer acknowledges an
// entry only once both are written. A message that looks stored already is checked against
// the server before it is skipped, so a message forgotten meanwhile is
// stored again.
//
// # Reading
//
// Messages, LatestSeq, Held and StoredCopies read chunks by _id: a block
// is its chunks read in k order up to the first that is missing, and the
// newest block is the last record of message_tops, found by looking
// records up exponentially and then by halves (and remembered). A page of
// history reads the blocks it spans from the end it starts at.
//
// # Moving an earlier layout
//
// Earlier builds stored one document per message, {_id: message id, conv,
// seq, from, to?, room?, text, ts}: first in one collection "messages",
// then in 32 buckets "messages_00".."messages_31" by a hash of the
// conversation. Open moves every such collection it finds into blocks, one
// collection after another (in random order, so that nodes opening the
// store at once mostly move different ones), logging when it starts, every
// 10 s of a collection, when a collection is done (then dropped) and when
// all are. Moving is idempotent: what the block layout holds already (moved
// before a stop, or written since) is left as it is, and an old message at
// a seq that holds another one loses to it. So a move that was cut short
// resumes with the collections still there, and a second Open finds nothing
// to move. During a rolling upgrade, messages that nodes of the earlier
// build write meanwhile are moved by the next Open.
//
// # The writer
//
// Writer consumes the Redis streams (one per shard of the journal, see
// StreamKeys) that nodes append every stored message to and writes the messages with the JSON the nodes wrote; only after
// MongoDB acknowledged the write does it delete the messages'
// pending-hash fields and acknowledge and delete the stream entries. One
// writer at a time is active, the holder of a lease in Redis (LeaseKey);
// the others stand by. MongoDB being down delays history, never chat: the
// writer holds the batch, backs off, and retries.
//
// This package imports neither session nor handler.
package history
