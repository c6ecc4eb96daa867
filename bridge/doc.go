// Package bridge moves messages between the outside world and the queue: the
// Receiver takes webhook requests into the buffer, and one Forwarder per sink
// hands what is queued to that sink and acknowledges what it delivered.
package bridge
