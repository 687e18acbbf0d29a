// Package leader is a node's term as leader of the cluster (Term): it
// links to every other node, routes what the nodes send up (direct
// messages to wherever their recipients are online, kicks, logins and
// rosters), runs the room service (membership, posts and their fan-out,
// one worker per room in arrival order), parks pushes for recipients it
// cannot place yet (Parking), tells the nodes when it is overloaded, and
// publishes the live-node list, counts its term and resets the hot words
// while it lasts.
//
// A term begins with Start and ends with Stop. Every goroutine of a term
// runs through Node.Go, so its node owns them, and Stop waits for all of
// them: two terms of one node never run at once. What a term needs of
// its node (local delivery, kicks, its roster, replies to its own
// requests, its load) goes through the Node interface; stores, services,
// logger, metrics and settings come in Deps, each store behind the small
// interface the term uses of it. Parking and UpMarks outlive a term: the
// node owns them and hands them to each of its terms.
//
// By file: the term, its lifecycle and its links to the members
// (term.go); what the nodes send up and where it goes (route.go); the
// loops that count the term, watch for overload and publish the node list
// (loops.go), and reset the hot words (hotwords.go); rooms (rooms.go);
// parking (park.go); pushes that are no message, typing and read
// receipts, which are neither stored nor parked (signal.go); what the
// term needs from outside (deps.go).
//
// It does not decide when this node leads: the node starts and stops
// terms as ZooKeeper's view changes. It does not speak the handshake or
// write to sockets itself (package peerlink), nor accept client
// connections, send a follower's frames up or resend them (package
// node).
package leader
