package mqttclient

import (
	"fmt"
	"net/url"
	"time"

	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/internal/tlsfiles"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// Defaults used when a Config field is zero.
const (
	DefaultName        = "mqtt"
	DefaultTopicPrefix = "wittra"
	DefaultWindow      = 256
	// DefaultWindowQoS2 is the default window at QoS 2. A broker holds a
	// QoS 2 publication until PUBREL and may cap how many it holds:
	// mosquitto disconnects a client that exceeds max_inflight_messages
	// (default 20), and MQTT 3.1.1 cannot tell the client the cap.
	DefaultWindowQoS2           = 10
	DefaultAckTimeout           = 30 * time.Second
	DefaultMaxReconnectInterval = 30 * time.Second // paho's own default, 10 min, is far too long
)

// Connection settings that are not configurable.
const (
	connectRetryInterval = 1 * time.Second // first wait after a failed connection attempt; doubles up to MaxReconnectInterval
	connectTimeout       = 10 * time.Second
	keepAlive            = 30 * time.Second
	statusQoS            = 1
)

// Config configures a `type: mqtt` sink.
type Config struct {
	Name     string    // sink name in logs and errors; default DefaultName
	URL      string    // tcp://, ssl://, ws:// or wss://; tcp and ssl default to ports 1883 and 8883
	ClientID string    // default "wittra-<GatewayID>"
	Username string    // empty: connect without credentials
	Password string    // secret, never logged
	TLS      TLSConfig // for ssl:// and wss:// only
	// QoS of the data, event and value publications: 0, 1 or 2. Zero is
	// QoS 0 (fire-and-forget, see the package doc): the configuration layer
	// supplies the documented default of 1.
	QoS                  byte
	Retain               bool          // publish data, events and values retained
	TopicPrefix          string        // default DefaultTopicPrefix
	Values               bool          // also publish one topic per measured value (docs/contract.md#topics)
	GatewayID            string        // names the status topic sinks.StatusTopic(prefix, id); required
	Window               int           // max publications in flight; default DefaultWindow (DefaultWindowQoS2 at QoS 2)
	AckTimeout           time.Duration // max wait for one acknowledgement; default DefaultAckTimeout
	MaxReconnectInterval time.Duration // cap of the reconnect backoff; default DefaultMaxReconnectInterval
	// Devices asks for the state topic and Home Assistant discovery;
	// its TopicPrefix, GatewayID and Values are taken from this config.
	Devices devicetopics.Options
}

// TLSConfig is the client side of a TLS connection (ssl:// or wss://).
// TLSConfig names the client TLS files (shared with the other sinks).
type TLSConfig = tlsfiles.Config

// withDefaults returns cfg with zero fields defaulted, or an error naming
// the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = DefaultTopicPrefix
	}
	if cfg.ClientID == "" && cfg.GatewayID != "" {
		cfg.ClientID = "wittra-" + cfg.GatewayID
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
		if cfg.QoS == 2 {
			cfg.Window = DefaultWindowQoS2
		}
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.MaxReconnectInterval == 0 {
		cfg.MaxReconnectInterval = DefaultMaxReconnectInterval
	}
	// mqttpub.New checks qos, window and ack timeout.
	if cfg.MaxReconnectInterval < 0 {
		return cfg, fmt.Errorf("max reconnect interval %v: must not be negative", cfg.MaxReconnectInterval)
	}
	if err := sinks.CheckTopicPart(cfg.TopicPrefix, true); err != nil {
		return cfg, fmt.Errorf("topic prefix %q: %w", cfg.TopicPrefix, err)
	}
	if err := sinks.CheckTopicPart(cfg.GatewayID, false); err != nil {
		return cfg, fmt.Errorf("gateway id %q: %w", cfg.GatewayID, err)
	}
	return cfg, nil
}

// parseBrokerURL checks raw and fills in the default port of tcp:// and
// ssl://. It reports whether the scheme is a TLS one.
func parseBrokerURL(raw string) (u *url.URL, secure bool, err error) {
	return mqttpub.ParseURL(raw, "tcp", "ssl", "ws", "wss")
}
