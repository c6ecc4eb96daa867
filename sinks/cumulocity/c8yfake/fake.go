package c8yfake

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Defaults for empty Options fields.
const (
	DefaultTenant        = "t1000"
	DefaultUser          = "device_test"
	DefaultPassword      = "secret"
	DefaultMaxPacketSize = 16184 // whole MQTT packet, header included
)

// Options configure the fake.
type Options struct {
	Tenant string            // tenant id; DefaultTenant
	Users  map[string]string // user (without tenant) → password; {DefaultUser: DefaultPassword}
	// MaxPacketSize bounds an MQTT packet, fixed header included; a client
	// that sends a bigger one is disconnected. DefaultMaxPacketSize.
	// Values below 16384 are enforced exactly.
	MaxPacketSize int
	Logger        *slog.Logger // mochi's log; nil discards
	// CertAuth, when set, adds an MQTT TLS listener (MQTTSURL) that
	// requires a client certificate and an mTLS token endpoint (TokenURL).
	CertAuth *CertAuth
}

// Server is a running fake.
type Server struct {
	opts     Options
	mochi    *mqtt.Server
	tcp      *listeners.TCP
	mqttAddr string
	httpSrv  *http.Server
	httpLn   net.Listener
	closing  chan struct{}
	done     chan struct{}
	close    sync.Once

	mu     sync.Mutex // guards st, faults, conns
	st     *store
	faults faults
	conns  map[string]*clientConn // by MQTT client id
	certs  *certListener          // nil without Options.CertAuth
}

// Start starts a fake with both sides on loopback.
func Start(opts Options) (*Server, error) {
	if opts.Tenant == "" {
		opts.Tenant = DefaultTenant
	}
	if opts.Users == nil {
		opts.Users = map[string]string{DefaultUser: DefaultPassword}
	}
	if opts.MaxPacketSize <= 0 {
		opts.MaxPacketSize = DefaultMaxPacketSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		opts:    opts,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		st:      newStore(),
		conns:   map[string]*clientConn{},
	}

	caps := mqtt.NewDefaultServerCapabilities()
	// mochi refuses a packet when remaining length + 1 exceeds this. For
	// packets of 128..16383 remaining bytes the whole packet is remaining +
	// 3 bytes, so MaxPacketSize-2 makes "whole packet ≤ MaxPacketSize" exact.
	caps.MaximumPacketSize = uint32(opts.MaxPacketSize - 2)
	caps.MaximumSessionExpiryInterval = 0 // clean sessions only: nothing is kept for offline devices
	s.mochi = mqtt.New(&mqtt.Options{Capabilities: caps, Logger: opts.Logger, InlineClient: false})
	if err := s.mochi.AddHook(&hook{s: s}, nil); err != nil {
		return nil, fmt.Errorf("add hook: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "c8y-mqtt", Address: "127.0.0.1:0"})
	if err := s.mochi.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("listen mqtt: %w", err)
	}
	s.tcp = tcp
	s.mqttAddr = tcp.Address()
	if opts.CertAuth != nil {
		if err := s.startCertListeners(); err != nil {
			_ = s.mochi.Close()
			return nil, err
		}
	}
	if err := s.mochi.Serve(); err != nil {
		_ = s.mochi.Close()
		return nil, fmt.Errorf("serve mqtt: %w", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = s.mochi.Close()
		return nil, fmt.Errorf("listen http: %w", err)
	}
	s.httpLn = ln
	s.httpSrv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.httpSrv.Serve(ln)
	}()
	return s, nil
}

// MQTTURL is the MQTT endpoint, tcp://127.0.0.1:<port>.
func (s *Server) MQTTURL() string { return "tcp://" + s.mqttAddr }

// URL is the REST endpoint, http://127.0.0.1:<port>.
func (s *Server) URL() string { return "http://" + s.httpLn.Addr().String() }

// Tenant returns the tenant id.
func (s *Server) Tenant() string { return s.opts.Tenant }

// Close stops both sides and closes every connection. It is safe to call
// twice.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		close(s.closing)
		// Close the MQTT listener ourselves first. mochi v2.7.9's own
		// Close ends clients through Clients.GetByListener, which takes the
		// clients' read lock twice (it calls Len inside) and deadlocks when
		// a client disconnecting at that moment waits for the write lock.
		// The listener runs its close callback only once, so mochi's Close
		// then skips that path.
		s.tcp.Close(func(string) {
			for _, cl := range s.mochi.Clients.GetAll() {
				cl.Stop(errors.New("c8yfake: shutting down"))
			}
		})
		if s.certs != nil {
			// Its clients were stopped above; same deadlock as above.
			s.certs.mqtts.Close(func(string) {})
		}
		err = errors.Join(s.httpSrv.Close(), s.closeCertListeners(), s.mochi.Close())
		<-s.done
	})
	return err
}

// checkUser checks "<tenant>/<user>" and password; unless requireTenant, a
// bare "<user>" is accepted too (REST on the tenant's own domain). It
// returns the user without tenant.
func (s *Server) checkUser(login, password string, requireTenant bool) (string, bool) {
	tenant, user, ok := strings.Cut(login, "/")
	if !ok {
		if requireTenant {
			return "", false
		}
		tenant, user = s.opts.Tenant, login
	}
	want, known := s.opts.Users[user]
	return user, tenant == s.opts.Tenant && known && want == password
}

// basicAuth reads an Authorization: Basic header.
func basicAuth(h string) (login, password string, ok bool) {
	enc, found := strings.CutPrefix(h, "Basic ")
	if !found {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return "", "", false
	}
	login, password, ok = strings.Cut(string(raw), ":")
	return login, password, ok
}

// Inspection ---------------------------------------------------------------

// Devices returns every managed object in creation order.
func (s *Server) Devices() []ManagedObject {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ManagedObject, 0, len(s.st.mos))
	for _, mo := range s.st.mos {
		out = append(out, mo.clone())
	}
	slices.SortFunc(out, func(a, b ManagedObject) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// Device returns the managed object id.
func (s *Server) Device(id string) (ManagedObject, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mo, ok := s.st.mos[id]
	if !ok {
		return ManagedObject{}, false
	}
	return mo.clone(), true
}

// DeviceBySerial returns the managed object whose c8y_Serial is serial.
func (s *Server) DeviceBySerial(serial string) (ManagedObject, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.st.lookupExt("c8y_Serial", serial)
	if !ok {
		return ManagedObject{}, false
	}
	return s.st.mos[id].clone(), true
}

// ExternalIDs returns every external id binding in creation order.
func (s *Server) ExternalIDs() []ExternalID {
	return locked(s, func() []ExternalID { return slices.Clone(s.st.extOrder) })
}

// ChildLinks returns every child device link in creation order.
func (s *Server) ChildLinks() []ChildLink {
	return locked(s, func() []ChildLink { return slices.Clone(s.st.links) })
}

// Measurements returns the measurements in arrival order, duplicates kept.
func (s *Server) Measurements() []Measurement {
	return locked(s, func() []Measurement { return mapAll(s.st.measurements, Measurement.clone) })
}

// Events returns the events in arrival order, duplicates kept.
func (s *Server) Events() []Event {
	return locked(s, func() []Event { return mapAll(s.st.events, Event.clone) })
}

// Alarms returns the alarms (merged ones counted in Count).
func (s *Server) Alarms() []Alarm {
	return locked(s, func() []Alarm { return mapAll(s.st.alarms, func(a *Alarm) Alarm { return *a }) })
}

// locked runs read under the Server's mutex: the snapshot accessors above.
func locked[T any](s *Server, read func() T) T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return read()
}

// mapAll returns a new slice of f applied to each element of in.
func mapAll[S, T any](in []S, f func(S) T) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// Errors returns every error the fake reported, in order.
func (s *Server) Errors() []ErrorMessage {
	return locked(s, func() []ErrorMessage { return slices.Clone(s.st.errors) })
}

// Registrations returns the registration log in arrival order.
func (s *Server) Registrations() []Registration {
	return locked(s, func() []Registration { return slices.Clone(s.st.regs) })
}

// Publishes returns every device publish received, in order.
func (s *Server) Publishes() []Publish {
	return locked(s, func() []Publish { return slices.Clone(s.st.publishes) })
}

// DeleteManagedObject deletes a managed object with its external ids and
// child links, as an operator deleting a device in Cumulocity would. It
// reports whether it existed.
func (s *Server) DeleteManagedObject(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.deleteMO(id)
}

// SerialOf returns the c8y_Serial external id of managed object id.
func (s *Server) SerialOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.st.extOrder {
		if e.ManagedObject == id && e.Type == "c8y_Serial" {
			return e.Value
		}
	}
	return ""
}

// Reset forgets all stored data and pending faults; connections stay up.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = newStore()
	s.faults = faults{}
}
