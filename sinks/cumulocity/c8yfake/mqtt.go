package c8yfake

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The MQTT side: a mochi broker whose hook plays Cumulocity's MQTT
// endpoint. mochi does the protocol; the hook decides who may connect, what
// may be published and subscribed, and handles SmartREST on s/us*.

var (
	errRefused = errors.New("c8yfake: connection refused")
	errFault   = errors.New("c8yfake: connection closed by fault injection")
)

// clientConn is one live device connection.
type clientConn struct {
	cl     *mqtt.Client
	serial string // device identifier from the client id
	user   string
	info   ConnInfo
}

// ConnInfo describes how a live connection logged in.
type ConnInfo struct {
	Serial       string // device identifier from the client id
	ClientID     string
	User         string // the Cumulocity user it acts as
	Username     string // as sent in CONNECT ("" if none)
	PasswordSent bool
	CertCN       string // common name of the client certificate ("" if none)
	CertSerial   string // its serial number, decimal
}

// splitClientID reads a Cumulocity MQTT client id,
// [connectionType:]deviceIdentifier[:defaultTemplateXId], and returns the
// device identifier. With two parts, "d:<id>" is read as type and id and
// anything else as id and template (unverified: the docs do not settle the
// two-part case).
func splitClientID(cid string) (string, error) {
	parts := strings.Split(cid, ":")
	var id string
	switch len(parts) {
	case 1:
		id = parts[0]
	case 2:
		if parts[0] == "d" {
			id = parts[1]
		} else {
			id = parts[0]
		}
	case 3:
		id = parts[1]
	default:
		return "", fmt.Errorf("client id %q has too many ':'", cid)
	}
	if id == "" {
		return "", fmt.Errorf("client id %q has no device identifier", cid)
	}
	if strings.ContainsAny(id, "/+#") {
		return "", fmt.Errorf("client id %q is not a valid device identifier", cid)
	}
	return id, nil
}

// deviceTopic reports whether topic is one devices publish SmartREST on and
// which child it addresses ("" = the device itself). The processing-mode
// variants t/us, q/us and c/us are handled like s/us.
func deviceTopic(topic string) (child string, ok bool) {
	for _, p := range []string{"s/us", "t/us", "q/us", "c/us"} {
		if topic == p {
			return "", true
		}
		if rest, found := strings.CutPrefix(topic, p+"/"); found && rest != "" && !strings.Contains(rest, "/") {
			return rest, true
		}
	}
	return "", false
}

// subscribable reports whether a device may subscribe to filter: only the
// downstream topics, never the publish topics.
func subscribable(filter string) bool {
	switch filter {
	case "s/e", "s/ds", "s/dt", "error", "devicecontrol/notifications":
		return true
	}
	rest, ok := strings.CutPrefix(filter, "s/dc/")
	return ok && rest != "" && !strings.ContainsAny(rest, "/+#")
}

type hook struct {
	mqtt.HookBase
	s *Server
}

func (h *hook) ID() string { return "c8yfake" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect}, []byte{b})
}

// OnConnect authenticates the connection and answers refusals with the
// CONNACK code Cumulocity uses: 2 unusable client id, 4 bad username or
// password, or the code of an injected refusal. mochi's own refusal path
// would send 5 for bad credentials, so the hook sends the CONNACK itself.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	s := h.s
	s.mu.Lock()
	code, refused := s.faults.takeConnect()
	s.mu.Unlock()
	serial, err := splitClientID(pk.Connect.ClientIdentifier)
	cn, serialNo, byCert := certIdentity(cl)
	var user string
	var userOK bool
	if byCert {
		// A verified certificate authenticates; credentials are not
		// needed (and not checked) on this listener.
		user, userOK = certUserPrefix+cn, true
	} else {
		user, userOK = s.checkUser(string(pk.Connect.Username), string(pk.Connect.Password), true)
	}
	reason := "injected refusal"
	switch {
	case refused:
	case err != nil:
		code, reason = 2, err.Error()
	case byCert && serial != cn:
		code, reason = 5, fmt.Sprintf("client id identifier %q is not the certificate's common name %q", serial, cn)
	case !userOK:
		code, reason = 4, "bad username or password"
	}
	if code != 0 {
		s.mu.Lock()
		s.st.addError("mqtt", serial, fmt.Sprintf("CONNACK %d: %s", code, reason))
		s.mu.Unlock()
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code})
		return errRefused
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.conns {
		if c.serial == serial && id != cl.ID {
			// Another client id naming the same device ("d:gw" vs "gw"):
			// one live connection per identifier.
			c.cl.Stop(errors.New("c8yfake: same device identifier connected again"))
		}
	}
	s.conns[cl.ID] = &clientConn{cl: cl, serial: serial, user: user, info: ConnInfo{
		Serial: serial, ClientID: cl.ID, User: user, Username: string(pk.Connect.Username),
		PasswordSent: pk.Connect.PasswordFlag || len(pk.Connect.Password) > 0, CertCN: cn, CertSerial: serialNo,
	}}
	return nil
}

// OnConnectAuthenticate allows what OnConnect let through.
func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows publishing only on device topics and subscribing only
// to downstream topics. mochi disconnects a 3.1.1 client whose QoS>0
// publish is refused, and answers a refused subscription with 0x80.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	ok := subscribable(topic)
	what := "subscribe to"
	if write {
		_, ok = deviceTopic(topic)
		if _, inv := inventoryTopic(topic); inv {
			ok = true // JSON inventory update (inventory.go)
		}
		what = "publish to"
	}
	if !ok {
		h.s.mu.Lock()
		h.s.st.addError("mqtt", h.s.serialOf(cl), fmt.Sprintf("%s %q refused", what, topic))
		h.s.mu.Unlock()
	}
	return ok
}

// OnPublish handles SmartREST on the device topics and applies publish
// faults. Returning ErrRejectPacket makes mochi skip the PUBACK;
// CodeSuccessIgnore acknowledges without routing to subscribers.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := h.s
	child, _ := deviceTopic(pk.TopicName)
	s.mu.Lock()
	f, _ := s.faults.takeMQTT(pk.TopicName)
	s.st.publishes = append(s.st.publishes, Publish{Seq: s.st.next(), Client: s.serialOf(cl), Topic: pk.TopicName,
		Packet: publishSize(pk.TopicName, len(pk.Payload), pk.FixedHeader.Qos), Lines: countLines(pk.Payload), Payload: string(pk.Payload)})
	s.mu.Unlock()
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-s.closing:
		}
	}
	switch f.Mode {
	case DropPublish:
		return pk, packets.ErrRejectPacket
	case PubackNoStore:
		return pk, packets.CodeSuccessIgnore
	}
	if id, inv := inventoryTopic(pk.TopicName); inv {
		s.handleInventory(cl, id, pk.Payload) // inventory.go
	} else {
		s.handleSmartREST(cl, child, pk.Payload)
	}
	switch f.Mode {
	case StoreNoPuback:
		return pk, packets.ErrRejectPacket
	case StoreAndDisconnect:
		cl.Stop(errFault)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnDisconnect forgets the connection and records why it ended when the
// fake caused it (oversized packet).
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conns[cl.ID]
	if c != nil && c.cl == cl {
		delete(s.conns, cl.ID)
	}
	if errors.Is(err, packets.ErrPacketTooLarge) {
		s.st.addError("mqtt", s.serialOf(cl), fmt.Sprintf("disconnected: packet larger than %d bytes", s.opts.MaxPacketSize))
	}
}

func countLines(payload []byte) int {
	lines, _ := ParseSmartREST(string(payload))
	return len(lines)
}

// publishSize is the size of a 3.1.1 PUBLISH packet.
func publishSize(topic string, payload int, qos byte) int {
	rem := 2 + len(topic) + payload
	if qos > 0 {
		rem += 2
	}
	n := 1
	for v := rem; ; v >>= 7 {
		n++
		if v < 128 {
			break
		}
	}
	return n + rem
}

// serialOf returns the device identifier of a connection (mutex held).
func (s *Server) serialOf(cl *mqtt.Client) string {
	if c := s.conns[cl.ID]; c != nil && c.cl == cl {
		return c.serial
	}
	id, _ := splitClientID(cl.ID)
	return id
}

// handleSmartREST handles the lines of one publish and sends the replies
// (s/e errors, s/ds answers) to the client if it subscribed to them.
func (s *Server) handleSmartREST(cl *mqtt.Client, child string, payload []byte) {
	s.mu.Lock()
	c := s.conns[cl.ID]
	if c == nil || c.cl != cl {
		s.mu.Unlock()
		return // connection already replaced
	}
	x := &smartREST{s: s, st: s.st, user: c.user, serial: c.serial, target: child}
	lines, err := ParseSmartREST(string(payload))
	for _, l := range lines {
		x.line(l)
	}
	if err != nil {
		tpl := ""
		if i := bytes.IndexByte(payload, ','); i > 0 && i < 8 {
			tpl = string(payload[:i])
		}
		x.errorf(codeMalformed, tpl, "%v", err)
	}
	s.mu.Unlock()
	for _, r := range x.replies {
		if _, ok := cl.State.Subscriptions.Get(r.topic); !ok {
			continue // not a response channel: lost when nobody listens
		}
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish},
			TopicName:   r.topic,
			Payload:     []byte(r.line),
		})
	}
}

// DropConnections closes every MQTT connection at once, as a network
// failure would. It returns how many were closed.
func (s *Server) DropConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		c.cl.Stop(errFault)
		n++
	}
	s.faults.count("drop")
	return n
}

// KickWithConnack sends every connected client a CONNACK with code (3 or 5
// in Cumulocity's usage) in mid-session and closes the connection.
func (s *Server) KickWithConnack(code byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		_ = c.cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code})
		c.cl.Stop(errFault)
		n++
	}
	s.faults.count("kick")
	return n
}

// Connections describes the live connections.
func (s *Server) Connections() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ConnInfo
	for _, c := range s.conns {
		if !c.cl.Closed() {
			out = append(out, c.info)
		}
	}
	return out
}

// Connected returns the device identifiers connected now.
func (s *Server) Connected() []string {
	var out []string
	for _, c := range s.Connections() {
		out = append(out, c.Serial)
	}
	return out
}
