package bridge

import (
	"container/list"
	"strings"
	"sync"
	"time"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

// DefaultMaxDevices bounds the last-seen device table when
// ReceiverConfig.MaxDevices is zero.
const DefaultMaxDevices = 1000

// MaxSeenBody is the largest body the device table keeps as a device's
// latest message; a larger one is remembered by its size only. With
// DefaultMaxDevices the table holds at most about 4 MiB of bodies (Wittra
// messages are typically under 1 KiB).
const MaxSeenBody = 4 << 10

// SeenDevice is one device of the last-seen table: what the status page
// shows of it.
type SeenDevice struct {
	Project  string
	ID       string
	Kind     sinks.Kind // kind of the latest message
	LastSeen time.Time  // when its latest message was accepted
	Messages uint64     // messages accepted since it entered the table
	Body     []byte     // latest message as received; nil when over MaxSeenBody
	BodyLen  int        // length of the latest message
}

// deviceTable remembers the most recently seen devices, least recently
// seen evicted first; project and device id together name a device.
type deviceTable struct {
	max  int
	mu   sync.Mutex
	byID map[deviceKey]*list.Element // value: *SeenDevice
	lru  list.List                   // front: most recent
}

func newDeviceTable(max int) *deviceTable {
	if max <= 0 {
		max = DefaultMaxDevices
	}
	return &deviceTable{max: max, byID: make(map[deviceKey]*list.Element)}
}

// note records the messages of one committed request. Entries it cannot
// decode are not ours to judge here (the forwarders count them).
// deviceKey names a device within its project.
type deviceKey struct{ project, device string }

func (t *deviceTable) note(entries []buffer.Entry, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range entries {
		// The key's strings alias e.Data: no allocation for a device
		// already in the table; a new one gets copies.
		m, err := decodeView(e.Data)
		if err != nil {
			continue
		}
		key := deviceKey{m.Project, m.Device}
		var d *SeenDevice
		if el, ok := t.byID[key]; ok {
			t.lru.MoveToFront(el)
			d = el.Value.(*SeenDevice)
		} else {
			if t.lru.Len() >= t.max {
				old := t.lru.Back()
				od := old.Value.(*SeenDevice)
				delete(t.byID, deviceKey{od.Project, od.ID})
				t.lru.Remove(old)
			}
			d = &SeenDevice{Project: strings.Clone(m.Project), ID: strings.Clone(m.Device)}
			t.byID[deviceKey{d.Project, d.ID}] = t.lru.PushFront(d)
		}
		d.Kind, d.LastSeen, d.BodyLen = m.Kind, now, len(m.Body)
		d.Messages++
		if len(m.Body) <= MaxSeenBody {
			d.Body = append(d.Body[:0], m.Body...)
		} else {
			d.Body = nil
		}
	}
}

// snapshot copies the table, most recently seen first.
func (t *deviceTable) snapshot() []SeenDevice {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]SeenDevice, 0, t.lru.Len())
	for el := t.lru.Front(); el != nil; el = el.Next() {
		d := *el.Value.(*SeenDevice)
		if d.Body != nil {
			d.Body = append([]byte(nil), d.Body...)
		}
		out = append(out, d)
	}
	return out
}

// Devices returns the last-seen devices (at most ReceiverConfig.MaxDevices),
// most recently seen first. Duplicates count as seen: the device did send.
func (r *Receiver) Devices() []SeenDevice { return r.devices.snapshot() }

// LastRequest is when the receiver last got a request, on any path and
// whatever its answer; zero before the first.
func (r *Receiver) LastRequest() time.Time {
	ns := r.lastRequest.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
