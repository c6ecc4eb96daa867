// Package sinks defines what every output of the gateway implements and the
// message shape the forwarders hand them. Concrete sinks live in subpackages.
package sinks

import (
	"context"
	"errors"
	"time"
)

// ErrPermanent marks a message the output refused as invalid: retrying it
// cannot succeed, so the forwarder dead-letters it and moves on.
var ErrPermanent = errors.New("rejected permanently")

// Errors of the sinks that count a message delivered only on the peer's
// acknowledgement (mqtt, cumulocity over MQTT, jetstream).
var (
	ErrConnectionLost = errors.New("connection lost before acknowledgement")
	ErrAckTimeout     = errors.New("no acknowledgement in time")
)

// Kind says which Wittra message family a message belongs to.
type Kind uint8

const (
	KindData  Kind = iota // payloadType DATA, or none (Data 2.0, legacy)
	KindEvent             // payloadType EVENT (portal events)
)

// String returns the topic leaf for the kind: "data" or "event".
func (k Kind) String() string {
	if k == KindEvent {
		return "event"
	}
	return "data"
}

// UnknownDevice is the device of a message that names none (docs/contract.md#webhook).
const UnknownDevice = "_unknown"

// Message is one accepted webhook message as the queue holds it.
type Message struct {
	Seq      uint64    // queue sequence, strictly increasing in acceptance order
	Received time.Time // when the gateway committed it (corrected for clock steps where it can be)
	Project  string    // topic-safe project name (body projectId, route project, or "default")
	Device   string    // topic-safe device id, or UnknownDevice
	Kind     Kind
	Body     []byte // the JSON object exactly as received; read-only

	// ReceivedUnsure: Received was read from a wall clock known to be wrong
	// (before the build time) and cannot be corrected yet. A sink must not
	// publish it as a time; the forwarder asks the queue again on every retry.
	ReceivedUnsure bool
}

// Sink is one output. A forwarder calls Publish from a single goroutine with
// batches in queue order.
type Sink interface {
	Name() string
	// Publish delivers msgs in order and returns how many of them, counted
	// from the start of the slice, are proven delivered (see docs/contract.md#delivery). When
	// delivered < len(msgs) the error says why; if it wraps ErrPermanent the
	// message msgs[delivered] was refused for good and is dead-lettered.
	// Only exception: a sink that has sent all of msgs and awaits their
	// acknowledgements may return early, with delivered > 0 and a nil
	// error; the forwarder then calls it again with msgs[delivered:]
	// followed by newer messages, so that the sink's window of
	// unacknowledged publications stays full across batches. With
	// backlog live_first a call for the other stream (other messages) may
	// come in between: acknowledgements of the messages not in a call
	// must be kept for the call that hands them back.
	Publish(ctx context.Context, msgs []Message) (delivered int, err error)
	// Close releases the output; after it Publish must not be called.
	Close(ctx context.Context) error
}
