// Package jetstream is the `type: jetstream` sink: it publishes the
// gateway's messages into a NATS JetStream stream
// (github.com/nats-io/nats.go and its jetstream package), typically a
// stream replicated over a cluster that many gateways share.
//
// # Subjects
//
// A message goes to <prefix>.<project>.<device>.data or .event, the body
// exactly as received. Project and device ids are escaped into single
// subject tokens by EscapeToken: '.', '*', '>', '%', space, control
// characters and DEL become %XX, anything else (non-ASCII included) is
// kept, so "tag.7" is published under wittra.P.tag%2E7.data. The headers
// carry Nats-Msg-Id (see below), Nats-Expected-Stream (the configured
// stream: a stream with other subjects capturing them refuses rather than
// stores) and Wittra-Gateway (the gateway id).
//
// # Stream
//
// Before its first publication on a connection the sink looks the stream
// up and creates it when missing: file storage, limits retention, the
// configured subjects (default <prefix>.>), max_age and duplicate_window,
// and the configured replicas. Without a configured count, replicas is 3
// when the server says it is in a cluster and the client knows 3 or more
// of its servers (the URLs given plus those the cluster advertises), else
// 1; the choice and its reason are logged. An existing stream is never
// changed; the sink refuses to publish when its subjects do not capture
// the sink's.
//
// # Delivery
//
// Durability belongs to the gateway's queue until the stream has the
// message. A message is delivered when JetStream acknowledged it: a PubAck
// without error from the configured stream. With replicas, JetStream
// acknowledges only once a majority of them stored it. A PubAck saying
// Duplicate also counts: the stream has the message already.
//
//   - Nats-Msg-Id is the body's payloadId, or, when the body has none, the
//     gateway's own id of the message (MsgID). The stream drops a second
//     copy within its duplicate window, so a message the gateway publishes
//     again after a crash, a lost acknowledgement or a reconnect is stored
//     once. Beyond the window (a gateway down longer than it) a
//     republished message is stored again.
//   - Publications are asynchronous: at most Window await their
//     acknowledgement. Publish returns how many leading messages are
//     acknowledged and why it stopped before the others; the forwarder
//     publishes the rest again.
//   - Per-device order: a message is sent only after the previous message
//     of the same device (same project and device id) in the batch has
//     been acknowledged. A publication the stream lost (leader change,
//     lost connection) can then never be overtaken by a later one of its
//     device, which the retry could not repair: the stream would drop the
//     later one's second copy as a duplicate. Other devices' messages fill
//     the window meanwhile; a backlog of a single device drains at one
//     message per round trip.
//   - nats.go reconnects by itself (every URL and every server the
//     cluster advertises, backoff up to 30 s), with its reconnect buffer
//     off: a publication is never queued in memory while disconnected, it
//     fails and is retried from the queue. Acknowledgements outstanding at
//     a disconnect fail at once.
//   - A message larger than the servers accept (max_payload, the stream's
//     max_msg_size) is refused permanently and dead-lettered.
//
// Delivery is exactly once into the stream within the duplicate window,
// and at least once beyond it. Consumers that read the stream see each
// device's messages in queue order.
package jetstream
