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
//	users     {_id: name, hash: bcrypt hash (binary), created: date}
//	messages  {_id: message id, conv, seq, from, to?, room?, text, ts}
//	          unique index {conv: 1, seq: 1}
//
// Writer consumes the Redis stream that nodes append every stored message
// to, bulk-writes the messages (keyed by message id, so a redelivery is
// harmless) and only then acknowledges and deletes the stream entries and
// the messages' pending-hash fields. MongoDB being down delays history,
// never chat: the writer holds the batch, backs off, and retries.
//
// This package imports neither session nor handler.
package history
