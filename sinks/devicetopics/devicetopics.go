// Package devicetopics derives the topics a sink publishes from what the
// gateway remembers of each device, beyond the topics of the message
// itself (sinks.Publications): the retained state topic P/J/D/state (the
// latest value of every key in one JSON object) and the Home Assistant MQTT
// discovery configs. The broker and mqtt sinks share it.
//
// Memory: at most Options.MaxDevices devices (the least recently heard of
// is forgotten first), each with at most maxKeys keys of at most
// maxValueBytes each. A forgotten device that reports again starts a new
// state object from that message and has its configs announced again.
package devicetopics

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/lru"
	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// Defaults of Options fields left zero.
const (
	DefaultDiscoveryPrefix = "homeassistant"
	// DefaultMaxDevices bounds the devices remembered: about 1.5 KB each
	// with a dozen keys (BenchmarkAdd reports the figure), 30 MB at most.
	DefaultMaxDevices = 20_000
	// DefaultRepublishSpread is how long a republication of every config
	// (Home Assistant came online) is spread over.
	DefaultRepublishSpread = 5 * time.Second

	// maxKeys bounds the keys remembered per device (a Wittra message has
	// about twenty); later keys are published but not remembered.
	maxKeys = 64
	// maxValueBytes bounds one remembered value; a larger one (a long
	// neighbour list) is left out of the state topic.
	maxValueBytes = 1024
	// maxInterned bounds the table of interned key paths.
	maxInterned = 4096
	// republishSteps is how many pauses a republication is cut into.
	republishSteps = 50
)

// HomeAssistant configures MQTT discovery.
type HomeAssistant struct {
	Enabled         bool
	DiscoveryPrefix string // default DefaultDiscoveryPrefix
}

// Options configures the topics of one sink.
type Options struct {
	TopicPrefix string // the sink's topic prefix; required
	GatewayID   string // names the gateway's status topic; required
	// Values tells whether the sink publishes one topic per value: Home
	// Assistant's sensors read them, so discovery requires it.
	Values        bool
	State         bool // publish the retained P/J/D/state topic
	HomeAssistant HomeAssistant
	// Directory names devices; nil means no names are known ("Wittra <id>").
	Directory sinks.Directory
	// Version of the gateway, shown in the configs' origin.
	Version         string
	MaxDevices      int           // 0 = DefaultMaxDevices
	RepublishSpread time.Duration // 0 = DefaultRepublishSpread
}

// Enabled reports whether o asks for any topic of this package.
func (o Options) Enabled() bool { return o.State || o.HomeAssistant.Enabled }

// WithDefaults fills zero fields and validates o.
func (o Options) WithDefaults() (Options, error) {
	if o.HomeAssistant.DiscoveryPrefix == "" {
		o.HomeAssistant.DiscoveryPrefix = DefaultDiscoveryPrefix
	}
	if o.MaxDevices <= 0 {
		o.MaxDevices = DefaultMaxDevices
	}
	if o.RepublishSpread <= 0 {
		o.RepublishSpread = DefaultRepublishSpread
	}
	if o.Version == "" {
		o.Version = "unknown"
	}
	switch {
	case o.TopicPrefix == "":
		return o, errors.New("topic prefix: empty")
	case o.GatewayID == "":
		return o, errors.New("gateway id: empty")
	case o.HomeAssistant.Enabled && !o.Values:
		return o, errors.New("homeassistant needs values: true (its sensors read the value topics)")
	}
	if o.HomeAssistant.Enabled {
		if err := CheckDiscoveryPrefix(o.HomeAssistant.DiscoveryPrefix, o.TopicPrefix); err != nil {
			return o, fmt.Errorf("homeassistant discovery prefix %q: %w", o.HomeAssistant.DiscoveryPrefix, err)
		}
	}
	return o, nil
}

// CheckDiscoveryPrefix rejects a discovery prefix that is not a valid topic
// prefix or overlaps the sink's topic prefix (Home Assistant must be able
// to publish its status there, and the sink's prefix is the gateway's).
func CheckDiscoveryPrefix(prefix, topicPrefix string) error {
	switch {
	case prefix == "":
		return errors.New("empty")
	case strings.ContainsAny(prefix, "+#\x00"):
		return errors.New("contains + # or NUL")
	case strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") || strings.Contains(prefix, "//"):
		return errors.New("has an empty topic level")
	case prefix == topicPrefix || strings.HasPrefix(prefix, topicPrefix+"/") || strings.HasPrefix(topicPrefix, prefix+"/"):
		return fmt.Errorf("overlaps the topic prefix %q", topicPrefix)
	}
	return nil
}

// Topics remembers devices and produces their state and discovery
// publications. A nil *Topics produces nothing. Safe for concurrent use.
type Topics struct {
	o      Options
	status string // the gateway's status topic (availability)
	log    zerolog.Logger

	mu       sync.Mutex
	devices  map[devKey]*device        // bound: o.MaxDevices
	order    lru.List[device, *device] // heard of longest ago first
	interned map[string]string         // bound: maxInterned
	gwSent   bool                      // the gateway's own config was published
	forgot   uint64                    // devices forgotten for the bound

	online chan struct{} // Home Assistant came online; capacity 1
	// renamed closes at the Directory's next change (DirectoryNotifier),
	// taken when Topics is made so that no change after it goes unseen;
	// nil without a notifier. Used by Republish only.
	renamed <-chan struct{}
}

type devKey struct{ project, device string }

// device is what is remembered of one device.
type device struct {
	key   devKey
	links lru.Links[device]
	keys  []key // sorted by path
	last  time.Time
}

// key is one value key of a device.
type key struct {
	path      string // interned
	kind      wittra.ValueKind
	value     string // latest payload, unless big
	big       bool   // the latest payload exceeded maxValueBytes
	time      time.Time
	announced bool // its discovery config was published
}

// New returns the Topics of o, or nil (which publishes nothing) when o
// enables nothing.
func New(o Options, log zerolog.Logger) (*Topics, error) {
	if !o.Enabled() {
		return nil, nil
	}
	o, err := o.WithDefaults()
	if err != nil {
		return nil, err
	}
	var renamed <-chan struct{}
	if n, ok := o.Directory.(sinks.DirectoryNotifier); ok {
		renamed = n.Changed()
	}
	return &Topics{
		renamed:  renamed,
		o:        o,
		status:   sinks.StatusTopic(o.TopicPrefix, o.GatewayID),
		log:      log.With().Str("component", "devicetopics").Logger(),
		devices:  make(map[devKey]*device),
		interned: make(map[string]string),
		online:   make(chan struct{}, 1),
	}, nil
}

// Add returns pubs (the message's own publications) with the discovery
// configs of m's keys not announced yet in front (so that Home Assistant
// subscribes before the values arrive) and m's device state after them.
func (t *Topics) Add(pubs []sinks.Publication, m sinks.Message) []sinks.Publication {
	if t == nil || m.Kind != sinks.KindData {
		return pubs
	}
	vals, err := wittra.ValuesOfValid(m.Body)
	if err != nil || len(vals) == 0 {
		return pubs // sinks.Publications reported the error already
	}
	at, ok := wittra.Timestamp(m.Body)
	if !ok && !m.ReceivedUnsure {
		at = m.Received.UTC()
	}
	info := t.info(m.Project, m.Device)

	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.device(devKey{m.Project, m.Device})
	var configs []sinks.Publication
	if t.o.HomeAssistant.Enabled && !t.gwSent {
		configs = append(configs, t.gatewayConfig())
		t.gwSent = true
	}
	for _, v := range vals {
		k := t.update(d, v, at)
		if k == nil || !t.o.HomeAssistant.Enabled || k.announced {
			continue
		}
		if p, ok := t.config(d.key, info, k); ok {
			configs = append(configs, p)
		}
		k.announced = true
	}
	if at.After(d.last) {
		d.last = at
	}
	if len(configs) > 0 {
		pubs = append(configs, pubs...)
	}
	if t.o.State {
		pubs = append(pubs, sinks.Publication{
			Topic:   t.o.TopicPrefix + "/" + m.Project + "/" + m.Device + "/state",
			Payload: stateJSON(d, info),
			Retain:  true,
		})
	}
	return pubs
}

// Undelivered forgets that the configs of msgs' devices were announced: a
// sink calls it for the messages a failed Publish did not deliver, so the
// retry announces them again.
func (t *Topics) Undelivered(msgs []sinks.Message) {
	if t == nil || !t.o.HomeAssistant.Enabled || len(msgs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gwSent = false
	for _, m := range msgs {
		if d := t.devices[devKey{m.Project, m.Device}]; d != nil {
			for i := range d.keys {
				d.keys[i].announced = false
			}
		}
	}
}

// info returns what the directory knows of a device.
func (t *Topics) info(project, dev string) sinks.DeviceInfo {
	if t.o.Directory == nil {
		return sinks.DeviceInfo{}
	}
	info, _ := t.o.Directory.Device(project, dev)
	return info
}

// device returns the remembered device k, creating it (and forgetting the
// one heard of longest ago past the bound); it becomes the most recent.
func (t *Topics) device(k devKey) *device {
	d := t.devices[k]
	if d == nil {
		if old := t.order.Front(); len(t.devices) >= t.o.MaxDevices && old != nil {
			t.order.Remove(old)
			delete(t.devices, old.key)
			t.forgot++
		}
		d = &device{key: devKey{strings.Clone(k.project), strings.Clone(k.device)}}
		t.devices[d.key] = d
	}
	t.order.MoveToBack(d)
	return d
}

// Links places d on the list of Topics (lru.Element).
func (d *device) Links() *lru.Links[device] { return &d.links }

// update records v (of a message measured at) on d and returns its key, or
// nil when d has no room for a new key. A value older than the one held
// (a message measured earlier but delivered later) does not replace it.
func (t *Topics) update(d *device, v wittra.Value, at time.Time) *key {
	i, found := findKey(d.keys, v.Path)
	if !found {
		if len(d.keys) >= maxKeys {
			return nil
		}
		p, ok := t.interned[v.Path]
		if !ok {
			p = strings.Clone(v.Path)
			if len(t.interned) < maxInterned {
				t.interned[p] = p
			}
		}
		// Grow by one: devices keep the same keys, exact capacity saves slack.
		ks := make([]key, len(d.keys)+1)
		copy(ks, d.keys[:i])
		copy(ks[i+1:], d.keys[i:])
		ks[i] = key{path: p}
		d.keys = ks
	}
	k := &d.keys[i]
	if found && !at.IsZero() && !k.time.IsZero() && at.Before(k.time) {
		return k
	}
	k.kind, k.time = v.Kind, at
	k.big = len(v.Payload) > maxValueBytes
	switch {
	case k.big:
		k.value = ""
	case k.value != string(v.Payload): // unchanged values cost no allocation
		k.value = string(v.Payload)
	}
	return k
}

// findKey finds path in the sorted keys.
func findKey(ks []key, path string) (int, bool) {
	lo, hi := 0, len(ks)
	for lo < hi {
		mid := (lo + hi) / 2
		if ks[mid].path < path {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(ks) && ks[lo].path == path
}

// Stats counts what Topics holds.
type Stats struct {
	Devices int
	Keys    int
	Forgot  uint64 // devices forgotten for the MaxDevices bound
}

// Stats reports what t holds now.
func (t *Topics) Stats() Stats {
	if t == nil {
		return Stats{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Stats{Devices: len(t.devices), Forgot: t.forgot}
	for _, d := range t.devices {
		s.Keys += len(d.keys)
	}
	return s
}
