package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"wittra-gateway/internal/field"
	"wittra-gateway/internal/ratelog"
)

// authHook decides who may connect, publish and subscribe. Unlike mochi's
// auth.Ledger, whose ACL allows when no rule matches, it denies by default:
//   - connect: an empty username is anonymous and allowed iff anonymous is
//     set; any other username must match a user's password (plain text
//     compared in constant time, or a bcrypt hash);
//   - subscribe/read: anonymous clients every topic "#" covers (so not
//     $SYS); users the topics their Subscribe filters cover (default "#");
//   - publish/write: anonymous clients never; users with Publish, on topics
//     their PublishTopics filters cover (default "#"), and never under a
//     reserved prefix (a broker sink's topic prefix, which holds its status
//     topic).
//
// mochi asks the hook about reads twice: at SUBSCRIBE with the filter (a
// refusal is a SUBACK failure code, 0x80 in MQTT 3.1.1 and 0x87 in 5), and
// for every message it delivers or retained message it sends, with the
// topic name. A subscription is allowed only if one of the user's filters
// covers all of it: with subscribe [wittra/P1/#], "wittra/P1/+/data" is
// allowed and "#" or "wittra/+/D1/data" are refused.
//
// The inline client (the gateway's own publishes) bypasses the ACL in
// mochi. Will messages bypass mochi's ACL too, so a connect whose will the
// client could not publish itself is refused.
type authHook struct {
	mqtt.HookBase
	ledger    atomic.Pointer[ledger] // replaced whole by setUsers (config reload)
	bcryptSem chan struct{}
	log       zerolog.Logger

	mu       sync.RWMutex
	reserved []string // topic prefixes of broker sinks

	// refusals: one line per (kind, user, client, topic) per minute; the
	// rest are counted in the next line's "suppressed".
	refusals *ratelog.Limiter[refusal]
	now      func() time.Time
}

type refusal struct{ kind, username, client, topic string }

// refusalInterval is how often one client's same refusal is logged.
const refusalInterval = time.Minute

type userEntry struct {
	plain  [sha256.Size]byte // sha256 of a plain-text password
	bcrypt []byte            // the password's bcrypt hash, when it is one
	read   filters
	write  filters // nil: may not publish
}

// anonymousRead is what anonymous clients may read.
var anonymousRead = filters{{"#"}}

// reBcrypt is the modular crypt format of bcrypt: $2a$, $2b$ or $2y$, a
// two-digit cost (4..31), 22 characters of salt and 31 of hash.
var reBcrypt = regexp.MustCompile(`^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$`)

// IsBcryptHash reports whether password is to be read as a bcrypt hash: it
// starts with $2a$, $2b$ or $2y$.
func IsBcryptHash(password string) bool {
	return strings.HasPrefix(password, "$2a$") || strings.HasPrefix(password, "$2b$") || strings.HasPrefix(password, "$2y$")
}

// CheckPassword reports why a configured password cannot be used, or nil.
// Plain text is always usable; a bcrypt hash must be well formed. The error
// never quotes the password.
func CheckPassword(password string) error {
	if password == "" {
		return errors.New("empty password")
	}
	if IsBcryptHash(password) && !reBcrypt.MatchString(password) {
		return errors.New("starts like a bcrypt hash ($2a$, $2b$, $2y$) but is not one: want $2y$<cost 04-31>$ and 53 characters of salt and hash")
	}
	return nil
}

// ledger is who may connect and what each user may read and write.
type ledger struct {
	anonymous bool
	users     map[string]*userEntry
	dummy     *userEntry // compared against for unknown users, to take as long
}

func newAuthHook(anonymous bool, users []User, reserved []string, log zerolog.Logger) (*authHook, error) {
	h := &authHook{
		bcryptSem: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		log:       log,
		refusals:  ratelog.New[refusal](refusalInterval),
		now:       time.Now,
	}
	if err := h.setUsers(anonymous, users); err != nil {
		return nil, err
	}
	for _, p := range reserved {
		h.reserve(p)
	}
	return h, nil
}

// setUsers replaces the users and the anonymous rule, or changes nothing
// when users are invalid. Connected clients keep their connection; from
// then on their reads and writes are checked against the new rules (a
// removed user can read and write nothing).
func (h *authHook) setUsers(anonymous bool, users []User) error {
	var errs field.List
	validateUsers(users, &errs)
	if err := errs.Err(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	l, err := newLedger(anonymous, users)
	if err != nil {
		return err
	}
	h.ledger.Store(l)
	return nil
}

func newLedger(anonymous bool, users []User) (*ledger, error) {
	h := &ledger{
		anonymous: anonymous,
		users:     make(map[string]*userEntry, len(users)),
		dummy:     &userEntry{},
	}
	maxCost := 0
	for _, u := range users {
		e := &userEntry{}
		if IsBcryptHash(u.Password) {
			e.bcrypt = []byte(u.Password)
			if cost, err := bcrypt.Cost(e.bcrypt); err == nil && cost > maxCost {
				maxCost = cost
				h.dummy = &userEntry{bcrypt: e.bcrypt} // never matches: the user is unknown
			}
		} else {
			e.plain = sha256.Sum256([]byte(u.Password))
		}

		sub := u.Subscribe
		if sub == nil {
			sub = []string{"#"}
		}
		var err error
		if e.read, err = newFilters(sub); err != nil {
			return nil, fmt.Errorf("broker user %q: subscribe: %w", u.Username, err)
		}
		if u.Publish {
			pub := u.PublishTopics
			if pub == nil {
				pub = []string{"#"}
			}
			if e.write, err = newFilters(pub); err != nil {
				return nil, fmt.Errorf("broker user %q: publish_topics: %w", u.Username, err)
			}
		}
		h.users[u.Username] = e
	}
	return h, nil
}

// ID returns the hook's name in mochi's logs.
func (h *authHook) ID() string { return "wittra-auth" }

// Provides lists the events the hook handles.
func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSubscribed
}

func (h *authHook) reserve(prefix string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.reserved {
		if p == prefix {
			return
		}
	}
	h.reserved = append(h.reserved, prefix)
}

// isReserved reports whether topic is a reserved prefix or lies under one.
func (h *authHook) isReserved(topic string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, p := range h.reserved {
		if topic == p || strings.HasPrefix(topic, p+"/") {
			return true
		}
	}
	return false
}

// passwordOK compares password with u's in constant time (plain) or with
// bcrypt. At most GOMAXPROCS bcrypt comparisons run at once, so a flood of
// logins cannot take every CPU from the webhook and the queue.
func (h *authHook) passwordOK(u *userEntry, password []byte) bool {
	if u.bcrypt == nil {
		got := sha256.Sum256(password)
		return subtle.ConstantTimeCompare(got[:], u.plain[:]) == 1
	}
	if len(password) > 72 {
		return false // bcrypt would compare only the first 72 bytes
	}
	h.bcryptSem <- struct{}{}
	defer func() { <-h.bcryptSem }()
	return bcrypt.CompareHashAndPassword(u.bcrypt, password) == nil
}

// OnConnectAuthenticate allows anonymous clients iff configured, and users
// whose password matches.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	var ok bool
	var write filters
	reason := "bad username or password"
	l := h.ledger.Load()
	if name == "" {
		ok = l.anonymous
		reason = "anonymous clients not allowed"
	} else {
		u, known := l.users[name]
		if !known {
			u = l.dummy // take as long as for a known user
		}
		match := h.passwordOK(u, pk.Connect.Password)
		ok = known && match
		write = u.write
	}
	if ok && pk.Connect.WillFlag && (pk.Connect.WillTopic == "" || !h.mayWrite(write, pk.Connect.WillTopic)) {
		ok = false
		reason = "will topic not allowed"
	}
	if !ok {
		h.log.Info().Str("username", name).Str("client", cl.ID).Str("remote", cl.Net.Remote).
			Str("listener", cl.Net.Listener).Str("reason", reason).Msg("broker connect refused")
	}
	return ok
}

// OnACLCheck answers for reads (a SUBSCRIBE filter, or the topic of a
// message about to be sent to cl) and writes (the topic cl publishes to).
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true // the gateway's own publishes (mochi skips the check anyway)
	}
	name := string(cl.Properties.Username)
	var read, pub filters
	if name == "" {
		read = anonymousRead
	} else if u, ok := h.ledger.Load().users[name]; ok {
		read, pub = u.read, u.write
	}
	if !write {
		return read.allows(topic)
	}
	if h.mayWrite(pub, topic) {
		return true
	}
	// mochi then drops a QoS 0 message silently, answers QoS 1/2 with "not
	// authorized" (MQTT 5) or disconnects the client (3.1.1) and logs only
	// "error processing packet" (log.go demotes that line): this one says
	// who and where.
	h.logRefusal("publish", cl, topic, "broker publish refused: the user may not publish to this topic")
	return false
}

// OnSubscribed logs the filters of a SUBSCRIBE that were refused.
func (h *authHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	for i, code := range reasonCodes {
		if code >= packets.ErrUnspecifiedError.Code && i < len(pk.Filters) {
			h.logRefusal("subscribe", cl, pk.Filters[i].Filter, "broker subscribe refused: the user may not read this filter")
		}
	}
}

// logRefusal logs a refused publish or subscribe of cl on topic (a filter
// for subscribe), rate-limited per kind, user, client and topic.
func (h *authHook) logRefusal(kind string, cl *mqtt.Client, topic, msg string) {
	name := string(cl.Properties.Username)
	ok, suppressed := h.refusals.Allow(refusal{kind, name, cl.ID, topic}, h.now())
	if !ok {
		return
	}
	ev := h.log.Info().Str("client", cl.ID).Str("username", name).Str("topic", topic).
		Str("remote", cl.Net.Remote).Str("listener", cl.Net.Listener)
	if suppressed > 0 {
		ev = ev.Int("suppressed", suppressed)
	}
	ev.Msg(msg)
}

// mayWrite reports whether a client with publish rules pub may publish to
// topic. mochi (v2.7.9 processPublish) checks before it resolves an MQTT 5
// topic alias, so an alias-only publish arrives here with an empty topic;
// it is allowed to clients that may publish at all, as the alias can only
// name a topic this check allowed before (rules and reserved prefixes are
// fixed before the broker serves).
func (h *authHook) mayWrite(pub filters, topic string) bool {
	if len(pub) == 0 {
		return false
	}
	if topic == "" {
		return true
	}
	return pub.allows(topic) && !h.isReserved(topic)
}

var _ mqtt.Hook = (*authHook)(nil)

// SetUsers replaces the broker's users and its anonymous rule while it
// serves (a config reload); invalid users change nothing. Connected
// clients stay connected, but every later read and write of theirs is
// checked against the new rules.
func (s *Server) SetUsers(allowAnonymous bool, users []User) error {
	return s.auth.setUsers(allowAnonymous, users)
}
