package broker

import (
	"strings"
	"sync"
	"time"

	"wittra-gateway/internal/lru"
)

// Retained values of the gateway's own topics live here, not in mochi.
//
// mochi keeps each retained message as a full packets.Packet (about 800 B
// before the payload) in a map plus a topic-tree node per level (about
// 560 B each): measured at ~20 KB of heap per device with a dozen value
// topics. This store keeps, per device (the first two levels under a sink's
// topic prefix: project and device), its key once and, per topic, the rest
// of the topic (interned: the same few value paths repeat on every device)
// and the payload: about 1 KB per device of which the /data body is most.
//
// Bounds (per owned prefix): at most maxTopics topics and maxBytes payload
// bytes, evicting the devices heard of longest ago first; devices not
// heard of for maxAge are cleared by sweep. Pinned topics (the gateway's
// own status) are exempt from both.

// Defaults of RetainPolicy fields left zero.
const (
	// DefaultRetainMaxAge clears the retained topics of a device not heard
	// of for 30 days.
	DefaultRetainMaxAge = 30 * 24 * time.Hour
	// DefaultRetainMaxTopics caps the retained topics of a sink: about
	// 150,000 devices with a dozen values each, at ~1.3 KB of heap per
	// device about 200 MB.
	DefaultRetainMaxTopics = 2_000_000
	// DefaultRetainMaxBytes caps the retained payload bytes of a sink
	// (bodies on /data can be large; values are a few bytes).
	DefaultRetainMaxBytes = 256 << 20
	// MinRetainMaxTopics is the smallest cap accepted.
	MinRetainMaxTopics = 100

	// maxInterned bounds the table of interned topic suffixes; past it
	// suffixes are stored per device (correct, only larger).
	maxInterned = 4096
)

// RetainPolicy bounds the retained topics of one sink's topic prefix.
type RetainPolicy struct {
	MaxAge    time.Duration // clear a device not heard of this long; 0 = DefaultRetainMaxAge
	MaxTopics int           // 0 = DefaultRetainMaxTopics
	MaxBytes  int64         // payload bytes; 0 = DefaultRetainMaxBytes

	// keep: nothing is cleared for age (MaxAge is ignored), only the caps
	// bound the store. Home Assistant discovery configs are published once
	// per entity and must outlive any silence.
	keep bool
}

func (p RetainPolicy) withDefaults() RetainPolicy {
	if p.MaxAge <= 0 {
		p.MaxAge = DefaultRetainMaxAge
	}
	if p.MaxTopics <= 0 {
		p.MaxTopics = DefaultRetainMaxTopics
	}
	p.MaxTopics = max(p.MaxTopics, MinRetainMaxTopics)
	if p.MaxBytes <= 0 {
		p.MaxBytes = DefaultRetainMaxBytes
	}
	return p
}

// RetainedStats counts what the retained store holds and has cleared.
type RetainedStats struct {
	Topics, Devices int
	Bytes           int64 // payload bytes held
	// EvictedTopics and EvictedDevices were cleared because a cap bit.
	EvictedTopics, EvictedDevices uint64
	// ExpiredTopics and ExpiredDevices were cleared after MaxAge silence.
	ExpiredTopics, ExpiredDevices uint64
}

// wholeTopic is the suffix of a topic with fewer than three levels under
// the prefix: the device key is then the whole topic. NUL never occurs in
// an MQTT topic, so it cannot clash with a real suffix.
const wholeTopic = "\x00"

// retainedEntry is one retained topic of a device.
type retainedEntry struct {
	suffix  string // topic = device key + "/" + suffix (or the key, for wholeTopic)
	payload string
}

// retainedDevice is the retained topics under one device key. It sits on
// its store's list, oldest heard of first, unless pinned.
type retainedDevice struct {
	key     string
	heard   int64 // unix nanoseconds of the last retained publish
	links   lru.Links[retainedDevice]
	entries []retainedEntry
	qos     byte
	pinned  bool
	gone    bool // removed from the store (a snapshot may still hold it)
}

func (d *retainedDevice) topic(e *retainedEntry) string {
	if e.suffix == wholeTopic {
		return d.key
	}
	return d.key + "/" + e.suffix
}

// clearedTopic is a topic a bound removed; subscribers are told with an
// empty publish.
type clearedTopic struct {
	topic string
	qos   byte
}

// retainedStore holds the retained topics under one owned topic prefix.
type retainedStore struct {
	prefix string
	policy RetainPolicy
	now    func() time.Time

	mu       sync.Mutex
	devices  map[string]*retainedDevice                // bound: policy.MaxTopics topics (each device has one)
	pinned   map[string]bool                           // topics exempt from the bounds; a few status topics
	interned map[string]string                         // bound: maxInterned
	order    lru.List[retainedDevice, *retainedDevice] // unpinned devices, heard of longest ago first
	stats    RetainedStats
}

func newRetainedStore(prefix string, p RetainPolicy, now func() time.Time) *retainedStore {
	return &retainedStore{
		prefix:   prefix,
		policy:   p.withDefaults(),
		now:      now,
		devices:  make(map[string]*retainedDevice),
		pinned:   make(map[string]bool),
		interned: make(map[string]string),
	}
}

// owns reports whether topic lies under the store's prefix.
func (s *retainedStore) owns(topic string) bool {
	return len(topic) > len(s.prefix) && topic[len(s.prefix)] == '/' && strings.HasPrefix(topic, s.prefix)
}

// split cuts topic (under the prefix) into its device key (prefix and the
// next two levels) and the rest.
func (s *retainedStore) split(topic string) (key, suffix string) {
	rest := topic[len(s.prefix)+1:]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return topic, wholeTopic
	}
	j := strings.IndexByte(rest[i+1:], '/')
	if j < 0 {
		return topic, wholeTopic
	}
	k := len(s.prefix) + 1 + i + 1 + j
	return topic[:k], topic[k+1:]
}

func (s *retainedStore) intern(suffix string) string {
	if v, ok := s.interned[suffix]; ok {
		return v
	}
	v := strings.Clone(suffix)
	if len(s.interned) < maxInterned {
		s.interned[v] = v
	}
	return v
}

// pin exempts topic from ageing and the caps.
func (s *retainedStore) pin(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pinned[topic] = true
	key, _ := s.split(topic)
	if d := s.devices[key]; d != nil && !d.pinned {
		s.order.Remove(d)
		d.pinned = true
	}
}

// set stores payload as the retained value of topic, or removes it when
// payload is empty (an empty retained publish). It returns the topics a
// cap evicted to make room.
func (s *retainedStore) set(topic string, payload []byte, qos byte) []clearedTopic {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, suffix := s.split(topic)
	d := s.devices[key]
	if len(payload) == 0 {
		if d != nil {
			s.removeEntry(d, suffix)
		}
		return nil
	}
	if d == nil {
		d = &retainedDevice{key: strings.Clone(key), pinned: s.pinned[topic]}
		s.devices[d.key] = d
		s.stats.Devices++
	}
	d.qos = qos
	d.heard = s.now().UnixNano()
	if !d.pinned {
		s.order.MoveToBack(d)
	}
	i := d.find(suffix)
	if i < 0 {
		// Grow by one: devices keep the same dozen topics, so exact
		// capacity saves append's doubling slack on every device.
		es := make([]retainedEntry, len(d.entries)+1)
		copy(es, d.entries)
		d.entries = es
		i = len(es) - 1
		d.entries[i].suffix = s.intern(suffix)
		s.stats.Topics++
	}
	e := &d.entries[i]
	if e.payload != string(payload) { // unchanged values cost no allocation
		s.stats.Bytes += int64(len(payload) - len(e.payload))
		e.payload = string(payload)
	}
	return s.enforceCaps(d)
}

func (d *retainedDevice) find(suffix string) int {
	for i := range d.entries {
		if d.entries[i].suffix == suffix {
			return i
		}
	}
	return -1
}

// enforceCaps evicts whole devices, oldest heard of first, until both caps
// hold. keep (the device just written) goes last: a single device above a
// cap stays.
func (s *retainedStore) enforceCaps(keep *retainedDevice) []clearedTopic {
	var out []clearedTopic
	for s.stats.Topics > s.policy.MaxTopics || s.stats.Bytes > s.policy.MaxBytes {
		d := s.order.Front()
		if d == nil || d == keep {
			break
		}
		s.stats.EvictedDevices++
		s.stats.EvictedTopics += uint64(len(d.entries))
		out = s.removeDevice(d, out)
	}
	return out
}

// sweep clears the devices not heard of for MaxAge.
func (s *retainedStore) sweep() []clearedTopic {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.policy.keep {
		return nil
	}
	cutoff := s.now().Add(-s.policy.MaxAge).UnixNano()
	var out []clearedTopic
	for d := s.order.Front(); d != nil && d.heard < cutoff; d = s.order.Front() {
		s.stats.ExpiredDevices++
		s.stats.ExpiredTopics += uint64(len(d.entries))
		out = s.removeDevice(d, out)
	}
	return out
}

func (s *retainedStore) removeEntry(d *retainedDevice, suffix string) {
	i := d.find(suffix)
	if i < 0 {
		return
	}
	s.stats.Topics--
	s.stats.Bytes -= int64(len(d.entries[i].payload))
	if len(d.entries) == 1 {
		d.entries = nil
		s.dropDevice(d)
		return
	}
	es := make([]retainedEntry, 0, len(d.entries)-1)
	es = append(es, d.entries[:i]...)
	d.entries = append(es, d.entries[i+1:]...)
}

func (s *retainedStore) removeDevice(d *retainedDevice, out []clearedTopic) []clearedTopic {
	for i := range d.entries {
		out = append(out, clearedTopic{topic: d.topic(&d.entries[i]), qos: d.qos})
		s.stats.Bytes -= int64(len(d.entries[i].payload))
	}
	s.stats.Topics -= len(d.entries)
	d.entries = nil
	s.dropDevice(d)
	return out
}

func (s *retainedStore) dropDevice(d *retainedDevice) {
	if !d.pinned {
		s.order.Remove(d)
	}
	delete(s.devices, d.key)
	d.gone = true
	s.stats.Devices--
}

// Links places d on its store's list (lru.Element).
func (d *retainedDevice) Links() *lru.Links[retainedDevice] { return &d.links }

// has reports whether topic holds a retained value.
func (s *retainedStore) has(topic string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, suffix := s.split(topic)
	d := s.devices[key]
	return d != nil && d.find(suffix) >= 0
}

func (s *retainedStore) statsNow() RetainedStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// retainedMsg is one retained topic read for delivery.
type retainedMsg struct {
	topic   string
	payload string
	qos     byte
}

// candidates returns the devices whose topics f may match: one device when
// f names the device key's levels literally, else every device (a snapshot
// of pointers; the values are read at delivery time by matches).
func (s *retainedStore) candidates(f []string) []*retainedDevice {
	plevels := strings.Count(s.prefix, "/") + 1
	if !prefixMayMatch(f, s.prefix) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(f) >= plevels+2 && isLiteral(f[:plevels+2]) {
		if d := s.devices[strings.Join(f[:plevels+2], "/")]; d != nil {
			return []*retainedDevice{d}
		}
		return nil
	}
	out := make([]*retainedDevice, 0, len(s.devices))
	for _, d := range s.devices {
		out = append(out, d)
	}
	return out
}

// matches appends d's topics that f matches, with their current values.
func (s *retainedStore) matches(dst []retainedMsg, d *retainedDevice, f []string) []retainedMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.gone {
		return dst
	}
	for i := range d.entries {
		e := &d.entries[i]
		suffix := e.suffix
		if suffix == wholeTopic {
			suffix = ""
		}
		if matchTopic(f, d.key, suffix) {
			dst = append(dst, retainedMsg{topic: d.topic(e), payload: e.payload, qos: d.qos})
		}
	}
	return dst
}

func isLiteral(levels []string) bool {
	for _, l := range levels {
		if l == "+" || l == "#" {
			return false
		}
	}
	return true
}

// prefixMayMatch reports whether filter f can match a topic under prefix.
func prefixMayMatch(f []string, prefix string) bool {
	rest := prefix
	for i := 0; ; i++ {
		if i == len(f) {
			return false // the filter ends above the prefix's topics
		}
		l, more := nextLevel(&rest)
		switch {
		case f[i] == "#":
			return !(i == 0 && strings.HasPrefix(prefix, "$"))
		case f[i] == "+":
			if i == 0 && strings.HasPrefix(prefix, "$") {
				return false
			}
		case f[i] != l:
			return false
		}
		if !more {
			return true
		}
	}
}

// matchTopic reports whether filter f (split into levels) matches the
// topic key + "/" + suffix (just key when suffix is empty), following MQTT:
// '+' one level, '#' the rest including none, and no wildcard in the first
// level matching a topic starting with '$'.
func matchTopic(f []string, key, suffix string) bool {
	rest, second := key, suffix
	haveSecond := suffix != ""
	more := true
	for i := 0; ; i++ {
		if i == len(f) {
			return !more
		}
		if f[i] == "#" {
			return !(i == 0 && strings.HasPrefix(key, "$"))
		}
		if !more {
			return false
		}
		var l string
		l, more = nextLevel(&rest)
		if !more && haveSecond {
			rest, more, haveSecond = second, true, false
		}
		switch {
		case f[i] == "+":
			if i == 0 && strings.HasPrefix(l, "$") {
				return false
			}
		case f[i] != l:
			return false
		}
	}
}
