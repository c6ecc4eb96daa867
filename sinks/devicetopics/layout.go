package devicetopics

import (
	"github.com/rs/zerolog"

	"wittra-gateway/sinks"
)

// Layout is what an MQTT sink (broker or mqtt) publishes for a message:
// its data or event topic and, with values, one topic per value
// (sinks.Publications), retained as the retained-value guard allows, plus
// the state and discovery topics of Topics. One goroutine uses it (a
// sink's Publish is not concurrent).
type Layout struct {
	prefix string
	values bool
	guard  *sinks.RetainGuard // retained values never go back in time; nil without retain
	Topics *Topics            // state topic and discovery; nil when off
	log    zerolog.Logger
	pubs   []sinks.Publication // reused across messages
}

// NewLayout returns the layout of a sink with topic prefix, gateway id,
// values and retain; o's own TopicPrefix, GatewayID and Values are
// replaced by these.
func NewLayout(o Options, prefix, gatewayID string, values, retain bool, log zerolog.Logger) (*Layout, error) {
	o.TopicPrefix, o.GatewayID, o.Values = prefix, gatewayID, values
	t, err := New(o, log)
	if err != nil {
		return nil, err
	}
	l := &Layout{prefix: prefix, values: values, Topics: t, log: log}
	if retain {
		l.guard = sinks.NewRetainGuard(0)
	}
	return l, nil
}

// Publications returns m's publications, each with its retain flag set,
// valid until the next call or Release. Values that cannot be read are
// logged and left out: the data or event publication still goes.
func (l *Layout) Publications(m sinks.Message) []sinks.Publication {
	pubs, verr := sinks.Publications(l.pubs[:0], l.prefix, m, l.values)
	l.guard.Mark(pubs, m) // before Add: state and discovery topics are always retained
	pubs = l.Topics.Add(pubs, m)
	l.pubs = pubs
	if verr != nil {
		l.log.Warn().Err(verr).Uint64("seq", m.Seq).Str("project", m.Project).Str("device", m.Device).
			Msg("values not published")
	}
	return pubs
}

// Release drops the references to the last message's bodies.
func (l *Layout) Release() { clear(l.pubs) }

// Seed tells the retained-value guard about messages published before a
// restart (sinks.RetainSeeder).
func (l *Layout) Seed(msgs []sinks.Message) {
	if l.guard == nil {
		return
	}
	var pubs []sinks.Publication
	for _, m := range msgs {
		pubs, _ = sinks.Publications(pubs[:0], l.prefix, m, l.values)
		l.guard.Seed(pubs, m)
	}
}
