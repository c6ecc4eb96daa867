package cumulocity

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// SmartREST 2.0 rendering for mode mqtt.

// MaxPacketSize is Cumulocity's MQTT limit, 16184 bytes. The reference says
// "header included"; the sink reads that as the whole PUBLISH packet (fixed
// header, topic, packet id and payload) and keeps every packet within it,
// which also keeps every payload under 16184 bytes.
const MaxPacketSize = 16184

// quoteField renders one CSV field: quoted with '"' when it contains a
// comma, quote, CR, LF or tab or starts or ends with whitespace, inner
// quotes doubled (thin-edge verified "" on a real tenant). Other text,
// UTF-8 included, passes through.
//
// Backslashes right before a quote are dropped: the Cumulocity docs also
// show \" as the quote escape, so a parser following them would read `\""`
// as an escaped quote followed by the closing one. Without `\"` in the
// output both conventions read the field alike; the price is those
// backslashes (e.g. in JSON-looking event text).
func quoteField(s string) string {
	if !needsQuote(s) {
		return s
	}
	s = stripBackslashQuote(s)
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// stripBackslashQuote removes every run of backslashes that ends right
// before a '"' or at the end of s (where the closing quote will follow).
func stripBackslashQuote(s string) string {
	if !strings.Contains(s, `\"`) && !strings.HasSuffix(s, `\`) {
		return s
	}
	var b strings.Builder
	run := 0 // pending backslashes
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			run++
		case '"':
			run = 0
			b.WriteByte(c)
		default:
			for ; run > 0; run-- {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

func needsQuote(s string) bool {
	if s == "" {
		return false
	}
	if strings.ContainsAny(s, ",\"\r\n\t") {
		return true
	}
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	return unicode.IsSpace(first) || unicode.IsSpace(last)
}

// csvLine joins fields into one SmartREST line.
func csvLine(fields ...string) string {
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quoteField(f))
	}
	return b.String()
}

// smartRESTLines renders the records of one message, all stamped with t.
//
//	c8y_TemperatureMeasurement.T alone → 211,<T>,<time>
//	other measurements                → 201,<type>,<time>,<fragment>,<series>,<value>,<unit>,...
//	events                            → 400,<type>,<text>,<time>
//	locations                         → 402,<lat>,<lng>,<alt>,<accuracy>,<time>
//
// Template 201 needs Cumulocity 10.18 or later.
func smartRESTLines(recs []record, t string) []string {
	lines := make([]string, 0, len(recs))
	for _, r := range recs {
		switch r.kind {
		case recMeasurement:
			if len(r.frags) == 1 && r.frags[0].name == temperatureFrag && r.typ == temperatureFrag &&
				len(r.frags[0].series) == 1 && r.frags[0].series[0].name == "T" && r.frags[0].series[0].unit == temperatureUnit {
				lines = append(lines, csvLine("211", r.frags[0].series[0].value, t))
				continue
			}
			fields := []string{"201", r.typ, t}
			for _, f := range r.frags {
				for _, s := range f.series {
					fields = append(fields, f.name, s.name, s.value, s.unit)
				}
			}
			lines = append(lines, csvLine(fields...))
		case recEvent:
			lines = append(lines, csvLine("400", r.typ, r.text, t))
		case recLocation:
			lines = append(lines, csvLine("402", r.lat, r.lng, r.alt, r.acc, t))
		}
	}
	return lines
}

// packetSize is the size of a QoS 1 PUBLISH of payloadLen bytes to topic.
func packetSize(topic string, payloadLen int) int {
	rem := 2 + len(topic) + 2 + payloadLen // topic length, topic, packet id, payload
	n := 1                                 // fixed header byte
	for v := rem; ; v >>= 7 {              // remaining-length varint
		n++
		if v < 128 {
			break
		}
	}
	return n + rem
}

// packLines joins lines with '\n' into as few payloads as fit the packet
// limit for topic, keeping their order. A line that cannot fit alone is
// returned as tooLong (its index), with no payloads.
func packLines(topic string, lines []string, limit int) (payloads [][]byte, tooLong int) {
	var cur []byte
	for i, l := range lines {
		if packetSize(topic, len(l)) > limit {
			return nil, i
		}
		if len(cur) > 0 && packetSize(topic, len(cur)+1+len(l)) > limit {
			payloads = append(payloads, cur)
			cur = nil
		}
		if len(cur) > 0 {
			cur = append(cur, '\n')
		}
		cur = append(cur, l...)
	}
	if len(cur) > 0 {
		payloads = append(payloads, cur)
	}
	return payloads, -1
}
