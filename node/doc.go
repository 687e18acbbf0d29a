// Package node is one chat node, and the composition root of the parts it
// is made of: it serves clients on a WebSocket listener, registers in the
// cluster, and runs a history writer. cmd/node only parses flags into a
// Config and runs a Server.
//
// What is here, by file: the Server, its lifecycle and the logins
// (server.go, config.go, metrics.go); client connections, their send
// queues and write loops (client.go, queue.go); the follower side of
// routing (route.go): local delivery, the queue of frames for the leader
// with its resends and acknowledgements, requests to the leader and their
// replies, the link the leader opened and what arrives on it; starting
// and stopping this node's terms as leader as ZooKeeper's view changes
// (term.go); the node's side of rooms, asked of the leader (rooms.go);
// putting this node's part back after Redis lost data (redisloss.go);
// the adapters of the stores to the handler (services.go, words.go); and
// typing and read receipts: their pushes, on the lowest priority for
// typing, and the read positions' store (receipts.go).
//
// What is not: the leader's duties, while this node leads, are package
// leader's (a leader.Term, which sees this node through leader.Node); the
// authenticated peer link and its handshake are package peerlink's, of
// which the node checks only what is node logic (a leader's epoch, and
// that ZooKeeper names it). What each client action does is package
// handler's.
//
// Goroutines: every long-lived goroutine is started through Server.goAttach,
// which refuses new ones once Close began; Close waits for all of them.
// Those of a leader term start there too (leader.Node.Go).
package node
