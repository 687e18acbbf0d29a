// Package cluster registers a chat node in ZooKeeper, keeps the list of
// live nodes and runs the leader election.
//
// Layout under the configured root (default "/chat"), itself under the
// chroot of the connection string if there is one (Config.Chroot: the
// client has none of its own, so the package prefixes every path with it):
//
//	<root>/nodes/<id>        ephemeral, the node's Member JSON
//	<root>/election/n_<seq>  ephemeral sequential, the same JSON
//	<root>/term              persistent, {"term","epoch"}: the count of leaderships (Cluster.ClaimTerm)
//
// ACLs: with a digest credential (Config.Auth) every znode the package
// creates, the chroot and root included, gives that identity every
// permission and everyone else READ; nobody else can register, enter the
// election, or delete a registration or an election znode (ZooKeeper
// checks a delete against the parent's ACL). Without one every znode is
// world-writable.
//
// The election znode with the lowest sequence leads. Its czxid is the
// leader's epoch: it only grows from one leader to the next, so a node can
// fence a deposed leader by ignoring an epoch older than one it has seen.
// It grows by an arbitrary amount; the term, which the leader counts in
// <root>/term as it takes office, numbers the leaders 1, 2, 3, ... for
// people to read.
// Every node watches only its predecessor in the election (no herd effect)
// and the children of <root>/nodes; it re-reads the election whenever the
// members change, its predecessor goes away or the session reconnects, so
// every node learns of a new leader, not only the successor.
//
// Session semantics:
//
//   - Disconnected: the published State has Connected=false and
//     IsLeader=false; a leader pauses its duties. A reconnect within the
//     session timeout keeps the session, its ephemeral znodes and the
//     leadership.
//   - Expired: the ZooKeeper client opens a new session on its own. The
//     node then registers again, enters the election with a new znode and
//     so gets a new place in the line (and, if it leads again, a new epoch).
//
// Lifecycle: New validates and wires, Start connects and returns once the
// node is registered and in the election, Updates delivers State snapshots
// in order, Close leaves and stops everything. See Cluster.
package cluster
