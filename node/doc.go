// Package node is one chat node: it serves clients on a WebSocket listener,
// registers in the cluster, takes its turn as leader, links to its peers on a
// separate authenticated listener, routes messages, and runs a history
// writer. cmd/node only parses flags into a Config and runs a Server.
//
// Goroutines: every long-lived goroutine is started through Server.goAttach,
// which refuses new ones once Close began; Close waits for all of them.
package node
