// Package testenv gives tests the real dependencies that `make test` started
// (ZooKeeper, Redis and the MongoDB-wire store), unique namespaces inside
// them so tests never see each other's data, and the one helper every wait
// goes through.
//
// A test that needs a dependency which is not running fails with a message
// saying how to start it; it never skips. The one exception is what only
// root may do: tests of nodes in network namespaces of their own
// (StartHosts) skip where the process may not create them, unless the run
// says they must run (CHAT_TEST_NETNS=1, as `make test` sets), where they
// fail.
package testenv
