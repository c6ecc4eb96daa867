package mqttclient

import (
	"cmp"
	"net/url"
	"time"

	"wittra-gateway/internal/field"
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

// withDefaults returns cfg with zero fields defaulted, or every problem
// Validate finds.
func (cfg Config) withDefaults() (Config, error) {
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	cfg.Name = cmp.Or(cfg.Name, DefaultName)
	cfg.TopicPrefix = cmp.Or(cfg.TopicPrefix, DefaultTopicPrefix)
	cfg.ClientID = cmp.Or(cfg.ClientID, "wittra-"+cfg.GatewayID)
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
		if cfg.QoS == 2 {
			cfg.Window = DefaultWindowQoS2
		}
	}
	cfg.AckTimeout = cmp.Or(cfg.AckTimeout, DefaultAckTimeout)
	cfg.MaxReconnectInterval = cmp.Or(cfg.MaxReconnectInterval, DefaultMaxReconnectInterval)
	return cfg, nil
}

// Validate reports every problem of cfg, zero fields standing for their
// defaults. Each is a *field.Error naming the key of a `type: mqtt` sink
// in the config file.
func (cfg Config) Validate() error {
	var errs field.List
	if cfg.URL == "" {
		errs.Add("url", "required for type mqtt (tcp://, ssl://, ws:// or wss://)")
	} else if _, _, err := parseBrokerURL(cfg.URL); err != nil {
		errs.Add("url", "%v", err)
	}
	if cfg.QoS > 2 {
		errs.Add("qos", "must be 0, 1 or 2")
	}
	if err := sinks.CheckTopicPart(cmp.Or(cfg.TopicPrefix, DefaultTopicPrefix), true); err != nil {
		errs.Add("topic_prefix", "%v", err)
	}
	if err := sinks.CheckTopicPart(cfg.GatewayID, false); err != nil {
		errs.Add("/gateway.id", "%v", err)
	}
	if cfg.Window < 0 || cfg.Window > 65535 { // the number of MQTT packet ids a connection has
		errs.Add("", "window %d: must be between 1 and 65535", cfg.Window)
	}
	if cfg.AckTimeout < 0 {
		errs.Add("", "ack timeout %v: must not be negative", cfg.AckTimeout)
	}
	if cfg.MaxReconnectInterval < 0 {
		errs.Add("", "max reconnect interval %v: must not be negative", cfg.MaxReconnectInterval)
	}
	return errs.Err()
}

// parseBrokerURL checks raw and fills in the default port of tcp:// and
// ssl://. It reports whether the scheme is a TLS one.
func parseBrokerURL(raw string) (u *url.URL, secure bool, err error) {
	return mqttpub.ParseURL(raw, "tcp", "ssl", "ws", "wss")
}
