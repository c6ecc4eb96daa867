package sinks

import "time"

// LinkState is the state of a sink's connection to its remote end, as the
// status page shows it.
type LinkState struct {
	Connected bool
	Since     time.Time // when Connected last changed (the sink's start before any change)
	LastError string    // why the last connection attempt failed; "" once connected
}

// Linked is implemented by sinks that hold a connection; sinks without one
// (an in-process broker) do not implement it.
type Linked interface {
	LinkState() LinkState
}
