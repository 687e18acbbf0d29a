// Package session tracks who is connected: Local is this node's registry
// of its own connections, sharded by user, and Store (the single login
// policy: one connection per user) and Devices (the multi policy: one per
// device, up to a bound) are the global sessions in Redis that say on
// which node and connection each user is logged in.
package session
