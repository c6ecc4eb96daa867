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
//	bucket "meta"   "format"         8-byte file format version (format.go);
//	                                 absent = 1 (files from before it).
//	                "format/msgs"    8-byte layout version of bucket msgs
//	                                 alone (what `queue export` reads).
//	                "bytes"          8-byte total of stored value sizes
//	                "cursor/<name>"  8-byte sequence: the last one consumer
//	                                 <name> acknowledged. It resumes at +1.
//	                "split/<name>"   (additive, any version) 8-byte split
//	                                 point + 8-byte live cursor of a
//	                                 consumer acknowledging live messages
//	                                 ahead of its backlog (split.go). A
//	                                 binary ignoring it resends, never loses.
//	                "clock"          (v2) the last committed clock reading:
//	                                 8-byte gateway time, 8-byte wall (Unix
//	                                 ns), 8-byte boot-clock reading, 1-byte
//	                                 trusted, boot id (timeline.go).
//	bucket "dedupw" (v3) the dedup window, one record per commit that
//	                accepted keys. key: 8-byte record sequence (bucket
//	                NextSequence) + 8-byte gateway time ns of the commit.
//	                value: the keys, each encoded by appendDedupID (a tag
//	                byte, then raw bytes, 6-bit packed [0-9A-Za-z-_], or a
//	                UUID's 16 bytes; a key longer than 128 bytes is its
//	                SHA-256). Appended at the end, deleted from the front
//	                when out of the window (dedupwin.go).
//	bucket "dedup"  (v1, v2 only) key: dedup key → 8-byte accept time.
//	bucket "dedupt" (v1, v2 only) key: 8-byte accept time + dedup key → empty.
//	bucket "epochs" (v2) key: 8-byte first sequence → 8-byte offset (wall −
//	                gateway time, ns, two's complement) + 1-byte trusted.
//	bucket "dead"   key: 8-byte sequence + consumer name → 8-byte refusal
//	                time, 8-byte receive time, uvarint length + reason,
//	                record bytes. Created on the first dead letter.
//	bucket "kv"     one nested bucket per namespace (a sink's own state).
//
// All integers are big-endian. Format version 1 is this layout without the
// entries marked (v2) and (v3); version 2 adds the (v2) ones (gateway time,
// timeline.go); version 3 replaces "dedup" and "dedupt" by "dedupw".
//
// # Format versions
//
// A change to any of the above is a new format version: add a migration
// step (format.go) that rewrites version N into N+1 inside one transaction,
// bump "format/msgs" too if msgs changes, and commit a fixture written by
// the new code (go run ./buffer/internal/mkfixture). Open migrates older
// files, refuses newer ones with a *FormatError and writes nothing to them;
// OpenReadOnly skips that check so messages can be exported after a
// rollback.
//
// Messages are only ever deleted from the front (lowest keys): when the
// slowest cursor passes them, when they are older than MaxAge, or when
// WhenFull is DropOldest and room is needed. So the stored keys are always
// one contiguous run from the head to the bucket's sequence, and the depth
// of a consumer is sequence minus its cursor.
//
// # Damage
//
// Beside the file: <path>.corrupt-<UTC> (a damaged file moved aside),
// <path>.opening (opens that began and did not finish) and <path>.damaged
// (bbolt panicked at run time). damage.go says how each is used; pages.go
// reads the format above without bbolt to check a file before bbolt opens
// it, and salvage.go copies what is readable into a fresh file. Salvage
// reads the layout above (and the dedup buckets of versions 1 and 2): a
// format bump must teach it the new layout too.
//
// # Commits
//
// All writes (appends, acknowledgements, sweeps) go through one committer
// goroutine. It takes every write waiting at that moment and commits them in
// one transaction, so concurrent webhook requests share an fsync (group
// commit) while a lone request never waits for a timer.
package buffer
