// Package mqttclient is the `type: mqtt` sink: it publishes the gateway's
// messages to an external MQTT 3.1.1 broker through paho
// (github.com/eclipse/paho.mqtt.golang).
//
// # Topics
//
// Each message becomes the publications of sinks.Publications (docs/contract.md#topics):
// P/J/D/data or P/J/D/event with the body as received and, with Values, one
// topic per measured value. The gateway's status topic
// sinks.StatusTopic(P, gateway id) carries a retained "online", published
// after every connect, and a retained "offline": registered as the will
// (the broker publishes it when the connection dies uncleanly) and
// published by Close on a clean shutdown.
//
// # Delivery (docs/contract.md#delivery)
//
// Durability belongs to the gateway's bbolt queue, not to paho. The
// connection is internal/mqttpub's (its package doc says how delivery is
// proven despite paho); Publish only proves delivery, and the forwarder
// deletes from the queue what Publish proved:
//
//   - At QoS 1 a publication is delivered when its PUBACK arrived (QoS 2:
//     PUBCOMP) on the connection it was sent on, with no connection event
//     in between. Publish waits (ctx-aware) for a connection first and
//     stops the moment it is lost.
//   - At QoS 0 a publication counts as delivered once paho has written it to
//     the connection. That is fire-and-forget, the user's explicit choice:
//     a broker or network failure right after the write loses it, and
//     Publish cannot know.
//   - At most Window publications are in flight. A message counts as
//     delivered once all its publications are; Publish returns how many
//     leading messages are, and why it stopped before the others.
//   - A PUBACK that does not come within AckTimeout is taken as a broken
//     connection: the sink drops it and connects a new client. So is a
//     connection on which paho fails a publication yet stays connected.
//   - At QoS 2 the default window is DefaultWindowQoS2: brokers cap the
//     QoS 2 publications a client has in flight (mosquitto:
//     max_inflight_messages, default 20) and disconnect a client that
//     exceeds the cap, which MQTT 3.1.1 gives no way to learn.
//
// Delivery is at least once: after a reconnect the forwarder publishes the
// undelivered suffix again, so subscribers may see duplicates (the body's
// payloadId identifies them). Messages of one device keep their order: they
// are published in queue order on one connection, a connection's
// publications never leak onto the next, and a retry always starts at the
// first message not proven delivered.
//
// A lost connection is retried at once, then after 1 s, doubling up to
// MaxReconnectInterval while attempts fail or connections keep dropping.
//
// Each Publish call ends by waiting for the last acknowledgements. A broker
// that leaves Nagle's algorithm on (mosquitto's default; set_tcp_nodelay
// true turns it off) may hold those back for one delayed-ACK period, up to
// 40 ms on Linux, per call.
//
// An MQTT 3.1.1 PUBACK carries no reason code: a broker that refuses a
// publication by ACL (mosquitto, for one) still acknowledges it, and it
// counts as delivered. Brokers that queue for offline subscribers may also
// drop silently once their queue is full (mosquitto's max_queued_messages).
package mqttclient
