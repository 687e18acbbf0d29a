// Package gateway is the HTTP front door: it tells clients which node to
// connect to (the live-node list the leader publishes in Redis), registers
// users and logs them in with a session token the nodes accept, and shows
// the cluster's state. It holds no chat state of its own, so any number of
// gateways can run side by side.
package gateway
