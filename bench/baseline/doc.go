// Package baseline is a minimal single-process WebSocket chat relay used as
// the yardstick of the load tool (cmd/chatbench): no cluster, no storage,
// no authentication. It speaks just enough of the chat protocol
// (docs/protocol.md) for the load tool's dm and room scenarios to drive it
// unchanged: login with any name, chat to a user or a room (reply
// {id, conv, seq, ts} and a message push to the recipients), joinRoom and
// ping. It also serves GET /metrics with the process metrics and
// chat_connections_logged_in, like a node's admin listener.
package baseline
