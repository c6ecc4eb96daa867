package c8yfake

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// PublishFault says how the fake mishandles a device publish (QoS 1 on
// s/us*) when an MQTT fault fires.
type PublishFault int

const (
	// PublishNormal handles the publish normally (use with MQTTFault.Delay
	// for a slow PUBACK).
	PublishNormal PublishFault = iota
	// DropPublish neither stores the publish nor acknowledges it: the
	// PUBACK is withheld and the connection stays up.
	DropPublish
	// StoreNoPuback stores the publish but withholds its PUBACK.
	StoreNoPuback
	// StoreAndDisconnect stores the publish, then closes the connection
	// instead of acknowledging it (the sender sees a lost connection and
	// resends: duplicates).
	StoreAndDisconnect
	// PubackNoStore acknowledges the publish and stores nothing (data loss
	// no client can detect; Cumulocity's docs do not promise PUBACK after
	// storage).
	PubackNoStore
)

// MQTTFault is a fault applied to device publishes.
type MQTTFault struct {
	Mode  PublishFault
	Delay time.Duration // wait this long before handling (delays the PUBACK)
	Topic string        // only publishes to this topic ("" = any device topic)
	Skip  int           // let this many matching publishes through first
}

// HTTPFault is a fault applied to REST requests that match it.
type HTTPFault struct {
	Method       string // "" = any
	PathPrefix   string // "" = any
	BodyContains string // only requests whose body contains this
	// Status, when set, is replied without handling the request, as a
	// Cumulocity error JSON; with 429 or 503, RetryAfter (seconds) is sent
	// as Retry-After when set.
	Status     int
	RetryAfter string
	// Delay waits before handling (slow replies: a client that gives up
	// first may still find the request stored).
	Delay time.Duration
	// ResetAfterStore handles the request (so it is stored) and then
	// closes the connection without a reply.
	ResetAfterStore bool
	Skip            int // let this many matching requests through first
}

type faultEntry[F any] struct {
	f     F
	times int // < 0: until cleared
}

type connectFault struct {
	code  byte
	times int
}

// faults is the pending fault state; the Server's mutex guards it.
type faults struct {
	mqtt    []*faultEntry[MQTTFault]
	http    []*faultEntry[HTTPFault]
	connect *connectFault
	fired   map[string]int
}

// InjectMQTT makes the next times device publishes (times < 0: all until
// ClearFaults) suffer f.
func (s *Server) InjectMQTT(f MQTTFault, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.mqtt = append(s.faults.mqtt, &faultEntry[MQTTFault]{f, times})
}

// InjectHTTP makes the next times matching REST requests (times < 0: all
// until ClearFaults) suffer f.
func (s *Server) InjectHTTP(f HTTPFault, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.http = append(s.faults.http, &faultEntry[HTTPFault]{f, times})
}

// RefuseConnects answers the next times MQTT connects with CONNACK code
// (e.g. 3 server unavailable, 5 not authorized).
func (s *Server) RefuseConnects(code byte, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.connect = &connectFault{code, times}
}

// ClearFaults removes every pending fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.mqtt, s.faults.http, s.faults.connect = nil, nil, nil
}

// FaultsFired returns how often each kind of fault took effect, by name:
// "mqtt:<mode>", "http:<status>", "http:delay", "http:reset", "connect:<code>",
// "drop" and "kick".
func (s *Server) FaultsFired() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.faults.fired))
	for k, v := range s.faults.fired {
		out[k] = v
	}
	return out
}

func (f *faults) count(name string) {
	if f.fired == nil {
		f.fired = map[string]int{}
	}
	f.fired[name]++
}

// take returns the first fault of list that matches, consuming one use; a
// match still in its Skip count passes (and counts down) instead.
func take[F any](list *[]*faultEntry[F], match func(*F) bool, skip func(*F) *int) (F, bool) {
	var none F
	for i, e := range *list {
		if !match(&e.f) {
			continue
		}
		if n := skip(&e.f); *n > 0 {
			*n--
			return none, false
		}
		if e.times > 0 {
			e.times--
			if e.times == 0 {
				*list = append((*list)[:i:i], (*list)[i+1:]...)
			}
		}
		return e.f, true
	}
	return none, false
}

// takeMQTT returns the fault for a publish to topic, consuming one use.
func (f *faults) takeMQTT(topic string) (MQTTFault, bool) {
	m, ok := take(&f.mqtt, func(m *MQTTFault) bool { return m.Topic == "" || m.Topic == topic },
		func(m *MQTTFault) *int { return &m.Skip })
	if ok {
		f.count("mqtt:" + m.Mode.String())
	}
	return m, ok
}

func (f *faults) takeHTTP(r *http.Request, body []byte) (HTTPFault, bool) {
	h, ok := take(&f.http, func(h *HTTPFault) bool {
		return (h.Method == "" || h.Method == r.Method) &&
			(h.PathPrefix == "" || strings.HasPrefix(r.URL.Path, h.PathPrefix)) &&
			(h.BodyContains == "" || strings.Contains(string(body), h.BodyContains))
	}, func(h *HTTPFault) *int { return &h.Skip })
	if !ok {
		return h, false
	}
	switch {
	case h.Status != 0:
		f.count("http:" + http.StatusText(h.Status))
	case h.ResetAfterStore:
		f.count("http:reset")
	default:
		f.count("http:delay")
	}
	return h, true
}

func (f *faults) takeConnect() (byte, bool) {
	c := f.connect
	if c == nil || c.times == 0 {
		return 0, false
	}
	if c.times > 0 {
		c.times--
	}
	f.count("connect:" + strconv.Itoa(int(c.code)))
	return c.code, true
}

// String names the fault mode.
func (p PublishFault) String() string {
	switch p {
	case PublishNormal:
		return "delay"
	case DropPublish:
		return "drop-publish"
	case StoreNoPuback:
		return "store-no-puback"
	case StoreAndDisconnect:
		return "store-and-disconnect"
	case PubackNoStore:
		return "puback-no-store"
	}
	return "unknown"
}
