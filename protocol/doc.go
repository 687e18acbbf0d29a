// Package protocol defines the wire format of the chat service: the client
// WebSocket envelope (requests, replies and pushes), the data of every
// action, the error codes, the size limits, and the frames nodes exchange on
// the authenticated peer link.
//
// It is pure: it encodes and decodes bytes and validates values. It does no
// I/O, no logging and holds no state.
package protocol
