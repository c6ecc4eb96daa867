// Package buffer is the gateway's durable FIFO: every accepted webhook message
// is committed (fsync'd) to a bbolt file before the webhook is answered, and
// stays there until every consumer (sink) has acknowledged it, or it expires,
// or it is dropped by the size policy.
//
// # File layout
//
//	bucket "msgs"   key: 8-byte big-endian sequence (bucket NextSequence), so
//	                byte order is arrival order and keys are never reused.
//	                value: 8-byte big-endian receive time (Unix ns) + the
//	                opaque record bytes the caller appended.
//	bucket "meta"   "bytes"          8-byte total of stored value sizes
//	                "cursor/<name>"  8-byte sequence: the last one consumer
//	                                 <name> acknowledged. It resumes at +1.
//	bucket "dedup"  key: dedup key (payloadId; a SHA-256 of it when longer
//	                than 128 bytes) → 8-byte accept time (Unix ns).
//	bucket "dedupt" key: 8-byte accept time + dedup key → empty. A time index
//	                so expired dedup keys are swept without a full scan.
//
// Messages are only ever deleted from the front (lowest keys): when the
// slowest cursor passes them, when they are older than MaxAge, or when
// WhenFull is DropOldest and room is needed. So the stored keys are always
// one contiguous run from the head to the bucket's sequence, and the depth
// of a consumer is sequence minus its cursor.
//
// # Commits
//
// All writes (appends, acknowledgements, sweeps) go through one committer
// goroutine. It takes every write waiting at that moment and commits them in
// one transaction, so concurrent webhook requests share an fsync (group
// commit) while a lone request never waits for a timer.
package buffer
