// Package metrics defines the Prometheus metrics of a chat node and of the
// gateway, and the admin HTTP handler that serves them with pprof.
//
// Nothing here is global: every Server or Gateway makes its own registry
// with NewRegistry and its own collectors with NewNode or NewGateway, and
// the default Prometheus registry is never used. The counters a hot path
// touches are plain fields, resolved once, so counting a message is one
// atomic add with no label lookup and no allocation. Values that live
// elsewhere (queue lengths, the history backlog, the leader epoch) are read
// at scrape time through functions the owner passes in.
//
// The timers of Redis, MongoDB and ZooKeeper calls (Deps) label their
// histograms by command or operation name. Those names come from code, not
// from users, and a timer keeps at most 64 of them (the rest count as
// "other"), so the label set stays bounded.
package metrics
