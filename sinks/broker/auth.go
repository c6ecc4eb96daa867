package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
)

// authHook decides who may connect, publish and subscribe. Unlike mochi's
// auth.Ledger, whose ACL allows when no rule matches, it denies by default:
//   - connect: an empty username is anonymous and allowed iff anonymous is
//     set; any other username must match a user's password;
//   - subscribe/read: any connected client;
//   - publish/write: users with Publish, and only outside reserved prefixes.
//
// The inline client (the gateway's own publishes) bypasses the ACL in
// mochi. Will messages bypass mochi's ACL too, so a connect whose will the
// client could not publish itself is refused.
type authHook struct {
	mqtt.HookBase
	anonymous bool
	users     map[string]userEntry
	log       zerolog.Logger

	mu       sync.RWMutex
	reserved []string // topic prefixes of broker sinks
}

type userEntry struct {
	hash    [sha256.Size]byte // sha256 of the password
	publish bool
}

func newAuthHook(anonymous bool, users []User, log zerolog.Logger) (*authHook, error) {
	h := &authHook{anonymous: anonymous, users: make(map[string]userEntry, len(users)), log: log}
	for i, u := range users {
		if u.Username == "" {
			return nil, fmt.Errorf("broker user %d: empty username", i)
		}
		if _, dup := h.users[u.Username]; dup {
			return nil, fmt.Errorf("broker user %d: duplicate username %q", i, u.Username)
		}
		h.users[u.Username] = userEntry{hash: sha256.Sum256([]byte(u.Password)), publish: u.Publish}
	}
	return h, nil
}

// ID returns the hook's name in mochi's logs.
func (h *authHook) ID() string { return "wittra-auth" }

// Provides lists the events the hook handles.
func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
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

// OnConnectAuthenticate allows anonymous clients iff configured, and users
// whose password matches (compared in constant time).
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	var ok, publish bool
	reason := "bad username or password"
	if name == "" {
		ok = h.anonymous
		reason = "anonymous clients not allowed"
	} else {
		got := sha256.Sum256(pk.Connect.Password)
		u, known := h.users[name]
		match := subtle.ConstantTimeCompare(got[:], u.hash[:]) == 1
		ok = known && match
		publish = u.publish
	}
	if ok && pk.Connect.WillFlag && !h.mayWrite(publish, pk.Connect.WillTopic) {
		ok = false
		reason = "will topic not allowed"
	}
	if !ok {
		h.log.Info().Str("username", name).Str("client", cl.ID).Str("remote", cl.Net.Remote).
			Str("listener", cl.Net.Listener).Str("reason", reason).Msg("broker connect refused")
	}
	return ok
}

// OnACLCheck allows reads to every connected client and writes to users
// with Publish outside the reserved prefixes.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write {
		return true
	}
	if cl.Net.Inline {
		return true // the gateway's own publishes (mochi skips the check anyway)
	}
	u, ok := h.users[string(cl.Properties.Username)]
	if ok && h.mayWrite(u.publish, topic) {
		return true
	}
	h.log.Debug().Str("username", string(cl.Properties.Username)).Str("client", cl.ID).
		Str("topic", topic).Msg("broker publish denied")
	return false
}

func (h *authHook) mayWrite(publish bool, topic string) bool {
	return publish && !h.isReserved(topic)
}

var _ mqtt.Hook = (*authHook)(nil)
