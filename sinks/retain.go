package sinks

import (
	"hash/maphash"
	"slices"
	"time"

	"wittra-gateway/wittra"
)

// DefaultRetainGuardTopics bounds the topics a RetainGuard remembers: about
// 40,000 devices with a dozen value topics each, in about 18 MiB of heap
// when full (36 B per topic: a map of 8-byte topic hashes to 8-byte times;
// BenchmarkRetainGuardMemory). It grows only with the topics published.
const DefaultRetainGuardTopics = 1 << 19

// RetainGuard keeps a retained topic from going back in time: a
// publication is retained only when its message is at least as new, by
// message time (MessageTime), as the newest one published retained on its
// topic. An older message (a backlog drained behind live data, or a device
// that uploads late) is still published, without the retain flag:
// subscribers and historians get it, a late subscriber still sees the
// newest value.
//
// It remembers, per topic, a 64-bit hash of the topic and the newest time.
// Bound: at most maxTopics topics; when full, the older half (by time) is
// forgotten and the newest time among them becomes a floor: a topic not
// remembered is retained only when its message is newer than the floor.
// So the rule holds strictly; the cost of the bound is that a forgotten
// topic's value older than the floor is published without retain.
//
// The memory lives as long as the process: after a restart a sink seeds it
// (Seed) with the messages the queue still holds that were already
// published out of order (a live_first sink's acknowledged live stream).
// A RetainGuard is used by one goroutine (the forwarder's).
type RetainGuard struct {
	seed      maphash.Seed
	newest    map[uint64]int64 // topic hash → newest message time (Unix ns)
	floor     int64
	maxTopics int
	forgotten uint64
}

// NewRetainGuard returns a guard remembering at most maxTopics topics
// (DefaultRetainGuardTopics when ≤ 0).
func NewRetainGuard(maxTopics int) *RetainGuard {
	if maxTopics <= 0 {
		maxTopics = DefaultRetainGuardTopics
	}
	return &RetainGuard{seed: maphash.MakeSeed(), newest: map[uint64]int64{}, maxTopics: max(maxTopics, 2), floor: -1 << 63}
}

// MessageTime is the time a message's values were measured: its Wittra
// timestamp, else the time the gateway received it.
func MessageTime(m Message) time.Time {
	if t, ok := wittra.Timestamp(m.Body); ok {
		return t
	}
	return m.Received
}

// Mark sets Retain on each of pubs (the publications of m) whose topic's
// retained value would not go back in time, and remembers m's time for
// those. A nil guard marks nothing (retain is off).
func (g *RetainGuard) Mark(pubs []Publication, m Message) {
	if g == nil {
		return
	}
	t := MessageTime(m).UnixNano()
	for i := range pubs {
		pubs[i].Retain = g.note(pubs[i].Topic, t)
	}
}

// Seed remembers the publications of messages already published (e.g.
// before a restart) as if they had been marked, in any order.
func (g *RetainGuard) Seed(pubs []Publication, m Message) {
	if g == nil {
		return
	}
	t := MessageTime(m).UnixNano()
	for _, p := range pubs {
		g.note(p.Topic, t)
	}
}

// note reports whether a publication of time t on topic may be retained,
// remembering t if so.
func (g *RetainGuard) note(topic string, t int64) bool {
	h := maphash.String(g.seed, topic)
	prev, ok := g.newest[h]
	switch {
	case ok && t < prev:
		return false
	case !ok && t <= g.floor:
		return false
	}
	if !ok && len(g.newest) >= g.maxTopics {
		g.forget()
	}
	g.newest[h] = t
	return true
}

// forget drops the older half of the remembered topics and raises the
// floor to the newest time dropped.
func (g *RetainGuard) forget() {
	times := make([]int64, 0, len(g.newest))
	for _, t := range g.newest {
		times = append(times, t)
	}
	slices.Sort(times)
	cut := times[len(times)/2]
	for h, t := range g.newest {
		if t <= cut {
			delete(g.newest, h)
			g.forgotten++
		}
	}
	g.floor = max(g.floor, cut)
}

// Len is how many topics the guard remembers.
func (g *RetainGuard) Len() int { return len(g.newest) }

// RetainSeeder is a sink that keeps retained values from going back in
// time and wants to know what was published before a restart (see
// RetainGuard.Seed): the forwarder hands it those messages before its first
// Publish.
type RetainSeeder interface {
	SeedRetained(msgs []Message)
}
