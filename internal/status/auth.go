package status

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// User may read the admin listener when basic auth is on.
type User struct {
	Username     string
	PasswordHash string // bcrypt ($2a$, $2b$ or $2y$)
}

// CheckHash reports why hash is not a usable bcrypt hash, or nil. The
// error never quotes the hash.
func CheckHash(hash string) error {
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return errors.New("must be a bcrypt hash ($2y$<cost>$...; make one with: htpasswd -nbBC 12 tech 'the password' | cut -d: -f2)")
	}
	return nil
}

// Bounds of the cache of recently verified credentials. bcrypt costs tens
// of milliseconds per check on a small board by design, and the page polls
// every few seconds; without the cache each poll would pay it.
const (
	authCacheSize = 32
	authCacheTTL  = 5 * time.Minute
)

// Auth guards an http.Handler with HTTP basic auth against bcrypt-hashed
// users. At most one bcrypt comparison runs at a time, so guessing cannot
// take more than one core.
type Auth struct {
	users map[string][]byte
	dummy []byte // compared for unknown users, so timing does not tell them apart
	open  map[string]bool
	now   func() time.Time
	sem   chan struct{}

	mu    sync.Mutex
	cache map[[32]byte]time.Time // sha256(user \x00 password) -> verified until
}

// NewAuth checks users (at least one, distinct names, valid hashes); paths
// listed in open (e.g. liveness probes) are served without credentials.
func NewAuth(users []User, open ...string) (*Auth, error) {
	if len(users) == 0 {
		return nil, errors.New("admin auth: no users")
	}
	a := &Auth{users: map[string][]byte{}, open: map[string]bool{}, now: time.Now,
		sem: make(chan struct{}, 1), cache: map[[32]byte]time.Time{}}
	minCost := bcrypt.MaxCost
	for i, u := range users {
		if u.Username == "" {
			return nil, fmt.Errorf("admin user %d: empty username", i)
		}
		if _, dup := a.users[u.Username]; dup {
			return nil, fmt.Errorf("admin user %d: duplicate username %q", i, u.Username)
		}
		if err := CheckHash(u.PasswordHash); err != nil {
			return nil, fmt.Errorf("admin user %q: password: %w", u.Username, err)
		}
		cost, _ := bcrypt.Cost([]byte(u.PasswordHash))
		minCost = min(minCost, cost)
		a.users[u.Username] = []byte(u.PasswordHash)
	}
	var err error
	if a.dummy, err = bcrypt.GenerateFromPassword([]byte("no such user"), minCost); err != nil {
		return nil, fmt.Errorf("admin auth: %w", err)
	}
	for _, p := range open {
		a.open[p] = true
	}
	return a, nil
}

// Wrap returns next behind basic auth.
func (a *Auth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.open[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		user, pass, ok := r.BasicAuth()
		if !ok || !a.verify(r, user, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="wittra-gateway admin", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *Auth) verify(r *http.Request, user, pass string) bool {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	now := a.now()
	a.mu.Lock()
	until, hit := a.cache[key]
	a.mu.Unlock()
	if hit && now.Before(until) {
		return true
	}
	hash, known := a.users[user]
	if !known {
		hash = a.dummy
	}
	select {
	case a.sem <- struct{}{}:
	case <-r.Context().Done():
		return false
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	<-a.sem
	if err != nil || !known {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= authCacheSize {
		for k, t := range a.cache { // drop the expired, else any one
			if !now.Before(t) || len(a.cache) >= authCacheSize {
				delete(a.cache, k)
			}
		}
	}
	a.cache[key] = now.Add(authCacheTTL)
	return true
}
