// Package handler turns decoded client requests into replies. It holds the
// dispatch table from action to function and the rules of every action
// (validation, authorisation, which store to ask), and depends only on the
// small interfaces in deps.go, so it is tested without sockets or servers.
//
// Handle is called from a connection's read loop, one request at a time per
// connection, which keeps a sender's messages in the order it sent them.
package handler
