// Package wsconn is a net.Conn that holds back what is written to it while
// its owner writes a batch, so that a batch of WebSocket frames leaves in
// as few write calls as its size allows: one per flush when it fits the
// buffer.
//
// A WebSocket library writes every frame to its net.Conn at once. Wrapped
// in a Conn, the frames a write loop writes between Cork and Flush are
// gathered in a buffer borrowed from a Buffers pool for the length of the
// batch, so an idle connection holds none. Writes made outside a batch
// (the handshake, a control frame another goroutine writes while no batch
// is open) go straight through; writes made during one, from any
// goroutine, join it and leave with its flush.
package wsconn
