// Package session tracks who is connected: Local is this node's registry
// of its own connections, sharded by user, and Store is the global session
// in Redis that says on which node and connection each user is logged in.
package session
