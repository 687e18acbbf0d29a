// Package history is the MongoDB side of the chat service: users and the
// full message history, and the writer that moves messages from the Redis
// history stream into MongoDB.
//
// Store is the narrow interface to MongoDB. It uses only what every
// MongoDB-wire server of the project supports: plain CRUD, unique indexes,
// unordered bulk inserts, and find with a filter, sort and limit.
//
// Layout, in the database given to Open:
//
//	users        {_id: name, hash: bcrypt hash (binary), created: date}
//	messages_NN  {_id: message id, conv, seq, from, to?, room?, text, ts}
//	             unique index {conv: 1, seq: 1}
//	rooms        {_id: name, members, epoch, updated}
//	user_convs   {_id: user + "/" + conv, user, conv}, index {user: 1}: the
//	             direct conversations of each user, written with the messages
//
// The messages are spread over MessageBuckets collections by a hash of the
// conversation (MessageCollection), so a read, which always names one
// conversation, touches one bucket. A store written by an earlier build,
// which kept every message in one "messages" collection, is moved into the
// buckets when it is opened.
//
// Writer consumes the Redis stream that nodes append every stored message
// to, bulk-writes the messages (keyed by message id, so a redelivery is
// harmless) and only then acknowledges and deletes the stream entries and
// the messages' pending-hash fields. MongoDB being down delays history,
// never chat: the writer holds the batch, backs off, and retries.
//
// This package imports neither session nor handler.
package history
