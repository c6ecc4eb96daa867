package cumulocity

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/sinks"
)

// Mode mqtt: SmartREST 2.0 over MQTT.
//
// Proof of delivery belongs to mqttpub: one paho client per connection,
// numbered connections, a window of publishes in flight, and a publish
// counts only if its PUBACK came on the connection it was sent on.
// Anything else is "not proven" and the message is retried (at-least-once:
// Cumulocity may then store it twice). Publish waits up to RequestTimeout
// for a connection, then fails (transient); a PUBACK that does not come
// within RequestTimeout drops the connection.
//
// On every (re)connect, before any data, the sink subscribes to s/e and
// publishes "100,<DeviceName>,wittra_Gateway" on s/us and waits for its
// PUBACK (Cumulocity answers a known device with "41,100,Device already
// existing" on s/e, which is ignored); a connection where that fails is
// dropped and made again. Publish makes sure a child's "101" was
// acknowledged and recorded in State before the child's first data.

const (
	// window is how many publishes may await their PUBACK at once.
	window = 64
	// maxSErrorTexts bounds the distinct s/e lines logged.
	maxSErrorTexts = 128
)

type mqttLink struct {
	s   *Sink
	pub *mqttpub.Publisher

	childMu  sync.Mutex
	children map[string]bool // registered children (cache of State)

	seMu    sync.Mutex
	seTexts map[string]bool // s/e lines already logged
}

func newMQTTLink(s *Sink, tlsCfg *tls.Config) (*mqttLink, error) {
	u, secure, err := mqttpub.ParseURL(s.cfg.URL, mqttSchemes...)
	if err != nil {
		return nil, fmt.Errorf("url %q: mqtt mode wants an MQTT url: %w", s.cfg.URL, err)
	}
	l := &mqttLink{s: s, children: map[string]bool{}, seTexts: map[string]bool{}}
	o := mqttpub.Options{
		Peer: "Cumulocity", URL: u, ClientID: s.clientID,
		QoS: 1, Window: window, AckTimeout: s.cfg.RequestTimeout,
		RetryInterval: s.cfg.connectRetryInterval, MaxRetryInterval: 30 * time.Second,
		ConnectTimeout: min(s.cfg.RequestTimeout, 30*time.Second), KeepAlive: 60 * time.Second,
		OnConnect: l.onConnect,
	}
	if secure {
		o.TLS = tlsCfg
	}
	if !s.certLogin { // with a certificate, CONNECT carries no credentials
		o.Username, o.Password = s.cfg.Tenant+"/"+s.cfg.Username, s.cfg.Password
	}
	if l.pub, err = mqttpub.New(o, s.log); err != nil {
		return nil, err
	}
	return l, nil
}

// onConnect subscribes to s/e and announces the gateway on a new
// connection, before any data.
func (l *mqttLink) onConnect(ctx context.Context, c *mqttpub.Conn) error {
	if err := c.Subscribe(ctx, "s/e", 0, l.onError); err != nil {
		l.s.log.Warn().Err(err).Msg("subscribe to s/e failed; Cumulocity errors will not be logged")
	}
	if err := c.Publish(ctx, mqttpub.Message{Topic: "s/us", QoS: 1, Payload: []byte(csvLine("100", l.s.cfg.DeviceName, gatewayType))}); err != nil {
		return fmt.Errorf("register gateway device: %w", err)
	}
	return nil
}

// onError logs what Cumulocity reports on s/e: each distinct line once
// (bounded), "41,100,Device already existing" never (expected on every
// reconnect). The sink never depends on s/e.
func (l *mqttLink) onError(_ string, payload []byte) {
	text := string(payload)
	if strings.HasPrefix(text, "41,100,") {
		return
	}
	l.seMu.Lock()
	defer l.seMu.Unlock()
	if l.seTexts[text] || len(l.seTexts) >= maxSErrorTexts {
		return
	}
	l.seTexts[text] = true
	l.s.log.Warn().Str("s/e", text).Msg("Cumulocity reported an error (logged once per distinct text)")
}

// ensureChild registers device as a child of the gateway under name ("101"
// on s/us, in b as part of message msg) unless State says it is registered;
// the PUBACK is awaited and the fact stored before returning.
func (l *mqttLink) ensureChild(ctx context.Context, b *mqttpub.Batch, msg int, device, name string) error {
	l.childMu.Lock()
	known := l.children[device]
	l.childMu.Unlock()
	if known {
		return nil
	}
	key := l.s.childKey(device)
	if v, err := l.s.state.Get(key); err != nil {
		return fmt.Errorf("read state: %w", err)
	} else if len(v) > 0 {
		l.rememberChild(device)
		return nil
	}
	if err := b.Send(sinks.Publication{Topic: "s/us", Payload: []byte(csvLine("101", device, name, sensorType))}, msg, false); err != nil {
		return fmt.Errorf("register child %s: %w", device, err)
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("register child %s: %w", device, err)
	}
	if err := l.s.recordName(ctx, device, name); err != nil { // names.go
		return err
	}
	if err := l.s.state.Put(ctx, key, []byte("1")); err != nil {
		return fmt.Errorf("record child %s: %w", device, err)
	}
	l.rememberChild(device)
	l.s.log.Info().Str("device", device).Msg("registered child device")
	return nil
}

// rememberChild caches that device is registered. The cache is bounded
// (maxCachedDevices): it only spares State reads, so when full it starts
// over rather than grow with every device id ever seen.
func (l *mqttLink) rememberChild(device string) {
	l.childMu.Lock()
	defer l.childMu.Unlock()
	if len(l.children) >= maxCachedDevices {
		clear(l.children)
	}
	l.children[device] = true
}

// planMQTT maps m and packs its lines into payloads for its topic.
func planMQTT(m sinks.Message) (mapped, string, [][]byte, error) {
	mp, err := mapMessage(m)
	if err != nil {
		return mapped{}, "", nil, err
	}
	topic := "s/us"
	if mp.device != "" {
		topic = "s/us/" + mp.device
	}
	lines := smartRESTLines(mp.records, formatTime(mp.time))
	payloads, tooLong := packLines(topic, lines, MaxPacketSize)
	if tooLong >= 0 {
		return mapped{}, "", nil, permanentf("message %d: SmartREST line %d is %d bytes, over Cumulocity's %d-byte MQTT limit",
			m.Seq, tooLong+1, len(lines[tooLong]), MaxPacketSize)
	}
	return mp, topic, payloads, nil
}

// publish delivers msgs with up to window publishes in flight.
func (l *mqttLink) publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	b, err := l.pub.Begin(ctx, l.s.cfg.RequestTimeout)
	if err != nil {
		return 0, err
	}
	defer b.End()
	maps := make([]mapped, 0, len(msgs))
	// finish returns n delivered (and err) once the publishes in flight are
	// settled; if they fail, fewer are delivered.
	finish := func(n int, err error) (int, error) {
		if ferr := b.Flush(); ferr != nil {
			n, err = min(n, b.Delivered()), ferr
		}
		l.s.delivered(maps[:n])
		return n, err
	}
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			return finish(i, err)
		}
		mp, topic, payloads, err := planMQTT(m)
		if err != nil {
			return finish(i, err)
		}
		if mp.device != "" {
			if err := l.ensureNamedChild(ctx, b, i, m.Project, mp.device); err != nil { // names.go
				return finish(i, err)
			}
		}
		maps = append(maps, mp)
		for k, pl := range payloads {
			if err := b.Send(sinks.Publication{Topic: topic, Payload: pl}, i, k == len(payloads)-1); err != nil {
				return finish(i, err)
			}
		}
	}
	return finish(len(msgs), nil)
}

func (l *mqttLink) close(ctx context.Context) {
	_ = l.pub.Close(ctx, nil)
}
