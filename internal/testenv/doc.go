// Package testenv gives tests the real dependencies that `make test` started
// (ZooKeeper, Redis and the MongoDB-wire store), unique namespaces inside
// them so tests never see each other's data, and the one helper every wait
// goes through.
//
// A test that needs a dependency which is not running fails with a message
// saying how to start it; it never skips.
package testenv
