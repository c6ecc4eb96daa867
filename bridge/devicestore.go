package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"wittra-gateway/wittra"
)

// Bounds of what DeviceStore keeps per device (the same as the status
// page shows).
const (
	MaxSavedValues   = 40  // values per device; the latest message's first
	MaxSavedValueLen = 120 // bytes per value, cut on a rune boundary
)

// DeviceKV is durable storage for the devices seen (satisfied by
// *buffer.KV).
type DeviceKV interface {
	Update(ctx context.Context, puts map[string][]byte) error
	ForEach(fn func(key string, value []byte) error) error
}

// SavedDevice is what is kept of one device seen: the `devices` command
// and the next start read it.
type SavedDevice struct {
	Project    string       `json:"project"` // topic-safe, as in topics
	ID         string       `json:"id"`      // topic-safe
	Kind       string       `json:"kind"`    // of the latest message: data | event
	LastSeen   time.Time    `json:"last_seen"`
	MeasuredAt *time.Time   `json:"measured_at,omitempty"` // the latest data message's own timestamp
	Values     []SavedValue `json:"values"`                // latest value of each key, newest message first
}

// SavedValue is one value as published on its value topic (clipped).
type SavedValue struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

// DeviceStore copies the receiver's last-seen table into the queue file's
// KV every so often (Run), so that the devices seen, their last-seen times
// and the latest value of each of their keys survive a restart and can be
// read offline. It keeps at most max devices (the receiver's MaxDevices),
// least recently seen dropped first, each with at most MaxSavedValues
// values of MaxSavedValueLen bytes: about 1000 × 5 KiB = 5 MiB at most with
// the defaults, typically a few hundred bytes per device.
type DeviceStore struct {
	kv   DeviceKV
	seen func() []SeenDevice // the live table; nil offline
	max  int

	mu    sync.Mutex
	saved map[deviceKey]*SavedDevice // what the KV holds
}

// OpenDeviceStore reads what kv holds. seen gives the live table
// ((*Receiver).Devices); nil for offline reading. max is the bound
// (DefaultMaxDevices when 0).
func OpenDeviceStore(kv DeviceKV, seen func() []SeenDevice, max int) (*DeviceStore, error) {
	if max <= 0 {
		max = DefaultMaxDevices
	}
	s := &DeviceStore{kv: kv, seen: seen, max: max, saved: map[deviceKey]*SavedDevice{}}
	err := kv.ForEach(func(_ string, v []byte) error {
		var d SavedDevice
		if json.Unmarshal(v, &d) == nil && d.ID != "" {
			s.saved[deviceKey{d.Project, d.ID}] = &d
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read devices seen: %w", err)
	}
	return s, nil
}

// Devices returns the devices kept, most recently seen first.
func (s *DeviceStore) Devices() []SavedDevice {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SavedDevice, 0, len(s.saved))
	for _, d := range s.saved {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b SavedDevice) int {
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		if a.Project != b.Project {
			return cmpString(a.Project, b.Project)
		}
		return cmpString(a.ID, b.ID)
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Projects returns the projects of the devices seen (kept or in the
// receiver's table), as Wittra spells them, without the gateway's
// placeholder DefaultProject.
func (s *DeviceStore) Projects() []string {
	set := map[string]bool{}
	s.mu.Lock()
	for k := range s.saved {
		set[k.project] = true
	}
	s.mu.Unlock()
	if s.seen != nil {
		for _, d := range s.seen() {
			set[d.Project] = true
		}
	}
	delete(set, DefaultProject)
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, wittra.UnescapeID(p))
	}
	slices.Sort(out)
	return out
}

// Save writes the devices whose latest message is newer than what is kept,
// and drops the least recently seen beyond the bound, in one commit.
func (s *DeviceStore) Save(ctx context.Context) error {
	if s.seen == nil {
		return errors.New("device store opened without a live table")
	}
	seen := s.seen()
	s.mu.Lock()
	defer s.mu.Unlock()
	puts := map[string][]byte{}
	for _, d := range seen {
		k := deviceKey{d.Project, d.ID}
		old := s.saved[k]
		if old != nil && !d.LastSeen.After(old.LastSeen) {
			continue
		}
		nd := merge(old, d)
		b, err := json.Marshal(nd)
		if err != nil {
			return err
		}
		puts[storeKey(k)] = b
		s.saved[k] = nd
	}
	if over := len(s.saved) - s.max; over > 0 {
		all := make([]*SavedDevice, 0, len(s.saved))
		for _, d := range s.saved {
			all = append(all, d)
		}
		slices.SortFunc(all, func(a, b *SavedDevice) int { return a.LastSeen.Compare(b.LastSeen) })
		for _, d := range all[:over] {
			k := deviceKey{d.Project, d.ID}
			delete(s.saved, k)
			puts[storeKey(k)] = nil
		}
	}
	if len(puts) == 0 {
		return nil
	}
	return s.kv.Update(ctx, puts)
}

func storeKey(k deviceKey) string { return k.project + "/" + k.device }

// merge makes the kept record of d: the latest message's values first,
// then the kept values of keys it did not carry, bounded.
func merge(old *SavedDevice, d SeenDevice) *SavedDevice {
	nd := &SavedDevice{Project: d.Project, ID: d.ID, Kind: d.Kind.String(), LastSeen: d.LastSeen.UTC(), Values: []SavedValue{}}
	if old != nil {
		nd.MeasuredAt = old.MeasuredAt
	}
	have := map[string]bool{}
	if d.Body != nil {
		if ts, ok := wittra.Timestamp(d.Body); ok {
			ts = ts.UTC()
			nd.MeasuredAt = &ts
		}
		if vals, err := wittra.ValuesOfValid(d.Body); err == nil {
			for _, v := range vals {
				if len(nd.Values) == MaxSavedValues {
					break
				}
				nd.Values = append(nd.Values, SavedValue{Path: v.Path, Value: clipValue(string(v.Payload))})
				have[v.Path] = true
			}
		}
	}
	if old != nil {
		for _, v := range old.Values {
			if len(nd.Values) == MaxSavedValues {
				break
			}
			if !have[v.Path] {
				nd.Values = append(nd.Values, v)
			}
		}
	}
	return nd
}

func clipValue(s string) string {
	if len(s) <= MaxSavedValueLen {
		return s
	}
	n := MaxSavedValueLen
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// Run saves every interval until ctx ends, then once more (with a short
// deadline of its own) so that the last minutes before a stop are kept.
// A failed save is retried at the next tick; it never touches intake.
func (s *DeviceStore) Run(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := s.Save(sctx); err != nil && onErr != nil {
				onErr(err)
			}
			return
		case <-t.C:
			if err := s.Save(ctx); err != nil && onErr != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
	}
}
