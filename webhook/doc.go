// Package webhook tells other systems what happens in the chat: it
// delivers events (a message stored, edited or recalled, a user logged in
// or out, a room joined or left) to HTTP endpoints the operator
// configures, signed with each endpoint's secret, at least once; and it
// calls an optional before-message hook that may allow, reject or rewrite
// a message before it is stored. docs/protocol.md, "Webhooks", is the
// contract receivers rely on.
//
// # Where events come from
//
// Message events come from the history writer (package history), not
// from the request that stored the message. The history stream carries
// every message stored, and will carry every entry of a conversation
// (edits, recalls, joins and leaves among them), but the writer deletes
// each entry once MongoDB has it, so a second consumer group on it would
// miss whatever the writer got to first. Instead the writer forwards what
// it wrote: for each shard it appends the messages of a batch to the
// shard's queue stream (StreamKeys) in the same Lua script that
// acknowledges and deletes their history entries (WriterConfig.Forward).
// No entry is gone without its message queued, a redelivered batch is
// queued again (same event id, so receivers dedupe it), and the request
// that stored the message does no webhook work at all: a slow or dead
// receiver, or the queue itself, cannot slow chat. message.stored thus
// means stored durably; it follows the message by the writer's pause
// (about 200 ms) and waits, like history, while MongoDB is down.
//
// Logins and logouts are not in any conversation: the node emits them
// (Emitter) when a login succeeds and when a logged-in connection ends.
// Emit only puts the event in a bounded buffer (O(1), never blocking; a
// full buffer drops and counts); a goroutine of the node pipelines them
// into the queue stream of the user's shard.
//
// Both add to a queue stream only if it exists, which the dispatchers
// create (Prepare): a cluster where no node has endpoints queues nothing,
// and the decision needs no configuration on the nodes that only write.
// Each stream is capped (Config.QueueCap, XADD MAXLEN ~), so a queue
// nobody reads stays bounded.
//
// # Delivery
//
// Every endpoint has its own consumer group on all the queue streams, so
// each endpoint reads at its own pace and one that is down holds back no
// other. One Dispatcher at a time is active, the holder of a lease in
// Redis like the history writer's; the others stand by and take over
// within about the lease (5 s), claiming the events the old one held once
// they have been idle for ClaimIdle. The active dispatcher runs a pump per
// endpoint: it reads entries into a bounded set of held events
// (Config.Held), hands due ones to Concurrency workers that POST them
// within the endpoint's timeout, and acknowledges an entry only when its
// event was delivered (2xx), was not for this endpoint, or was
// dead-lettered. A failed attempt is tried again after an exponential
// back-off (Backoff, with jitter; RetryMin doubling to RetryMax); after
// Attempts attempts the event goes to the dead-letter stream (DeadKey),
// with a log line and a metric. While an endpoint is down its held events
// keep being retried and the rest wait in the queue, unread; when it
// answers again every held event is tried at once and reading resumes. A
// line is logged when an endpoint starts failing and one when it
// recovers, never one per attempt.
//
// Entries stay in the streams until every endpoint is done with them: the
// active dispatcher's janitor trims each stream, every second, below the
// oldest entry some configured endpoint has not read or not acknowledged
// (XTRIM MINID). An endpoint that falls further behind than the cap loses
// the oldest events it had not read; that is logged and counted.
//
// Nothing orders events across conversations or users, and retries
// reorder them: receivers order by ts (and a message's seq) and dedupe by
// id.
//
// # The before-message hook
//
// Hook is called synchronously by the chat action, before the message is
// stored, with a deadline (200 ms by default); it answers allow, reject
// (the sender gets a 403 with the reason) or rewrite (the new text is
// stored, after the word filter and the length check). On an error, a
// timeout or an unusable answer the message is stored as sent (fail-open,
// the default) or refused with a 503 (fail-closed). The handler owns that
// decision (handler.Screen); this package only calls the hook.
package webhook
