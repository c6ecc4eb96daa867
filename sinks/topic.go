package sinks

import (
	"errors"
	"fmt"
	"strings"

	"wittra-gateway/wittra"
)

// Publication is one MQTT publish derived from a message.
type Publication struct {
	Topic   string
	Payload []byte
	// Retain: publish it retained. Set by RetainGuard.Mark when the sink
	// retains (a value never goes back in time), and always for device
	// state topics and Home Assistant discovery configs; Publications
	// leaves it false.
	Retain bool
}

// Publications returns the MQTT publishes for m under prefix (docs/contract.md#topics): the
// message as received on P/J/D/data or P/J/D/event, then, when values is
// set, one topic per measured value under P/J/D/. It appends to dst to let
// callers reuse a slice across messages.
func Publications(dst []Publication, prefix string, m Message, values bool) ([]Publication, error) {
	base := prefix + "/" + m.Project + "/" + m.Device + "/"
	dst = append(dst, Publication{Topic: base + m.Kind.String(), Payload: m.Body})
	if !values {
		return dst, nil
	}
	// Bodies come from the queue, where only valid JSON is ever stored.
	vals, err := wittra.ValuesOfValid(m.Body)
	if err != nil {
		return dst, fmt.Errorf("values of message %d: %w", m.Seq, err)
	}
	for _, v := range vals {
		dst = append(dst, Publication{Topic: base + v.Path, Payload: v.Payload})
	}
	return dst, nil
}

// StatusTopic is the retained online/offline topic of a gateway.
func StatusTopic(prefix, gatewayID string) string {
	return prefix + "/gateway/" + gatewayID + "/status"
}

// CheckTopicPart reports what would make s a bad part of a topic: being
// empty, MQTT wildcards or NUL, an empty level; '/' only when multiLevel
// (a topic prefix may span levels, a gateway id may not).
func CheckTopicPart(s string, multiLevel bool) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case !multiLevel && strings.ContainsAny(s, "/+#\x00"):
		return errors.New("must not contain / + # or NUL")
	case strings.ContainsAny(s, "+#\x00"):
		return errors.New("must not contain + # or NUL")
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return errors.New("must not start or end with / nor hold an empty level")
	}
	return nil
}
