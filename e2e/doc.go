// Package e2e holds the end-to-end tests: real node and gateway processes
// against the real ZooKeeper, Redis and MongoDB-wire store that `make test`
// starts, driven through the public gateway API and WebSocket protocol the
// way clients use them.
package e2e
