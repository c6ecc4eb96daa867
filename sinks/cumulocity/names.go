package cumulocity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/sinks"
)

// Child device names. A child is registered with the name Config.Directory
// knows for it (the Wittra name), else "Wittra <id>". The name given is
// kept in State; when the Directory's name later differs from it (edited
// in Wittra, or known only after the child was registered), the child is
// renamed before its next data: in mqtt mode by a JSON inventory update on
// inventory/managedObjects/update/<child id> (external id, as thin-edge
// does; unverified, see c8yfake/inventory.go), in rest mode by PUT
// /inventory/managedObjects/<id>. A name changed by hand in Cumulocity is
// left alone until the Wittra name changes. A failed rename never holds up
// data: it is logged and tried again after renameRetry.

// renameRetry is how long a failed rename waits before it is tried again.
const renameRetry = 10 * time.Minute

// childNames caches what State holds of the names given (bounded by
// maxCachedDevices, like the other caches).
type childNames struct {
	mu       sync.Mutex
	sent     map[string]string    // device → name last given
	failedAt map[string]time.Time // device → when its rename last failed
}

// defaultChildName is the name of a child without a Wittra name.
func defaultChildName(device string) string { return "Wittra " + device }

// childName is the name device should have in Cumulocity.
func (s *Sink) childName(project, device string) string {
	if s.cfg.Directory != nil {
		if d, ok := s.cfg.Directory.Device(project, device); ok && d.Name != "" {
			return d.Name
		}
	}
	return defaultChildName(device)
}

func (s *Sink) nameKey(device string) string { return s.prefix + "name|" + device }

// sentName is the name last given to device: cached, else from State, else
// the default (children registered before names were kept got it).
func (s *Sink) sentName(device string) (string, error) {
	s.names.mu.Lock()
	name, ok := s.names.sent[device]
	s.names.mu.Unlock()
	if ok {
		return name, nil
	}
	v, err := s.state.Get(s.nameKey(device))
	if err != nil {
		return "", fmt.Errorf("read state: %w", err)
	}
	name = defaultChildName(device)
	if len(v) > 0 {
		name = string(v)
	}
	s.cacheName(device, name)
	return name, nil
}

// recordName keeps name as the one given to device.
func (s *Sink) recordName(ctx context.Context, device, name string) error {
	if err := s.state.Put(ctx, s.nameKey(device), []byte(name)); err != nil {
		return fmt.Errorf("record name of %s: %w", device, err)
	}
	s.cacheName(device, name)
	return nil
}

func (s *Sink) cacheName(device, name string) {
	s.names.mu.Lock()
	defer s.names.mu.Unlock()
	if s.names.sent == nil || len(s.names.sent) >= maxCachedDevices {
		s.names.sent = map[string]string{}
	}
	s.names.sent[device] = name
}

// renameIfChanged renames device to want with rename when that differs
// from the name last given. Errors are logged, never returned: data goes
// on under the old name.
func (s *Sink) renameIfChanged(ctx context.Context, device, want string, rename func(context.Context, string) error) {
	sent, err := s.sentName(device)
	if err != nil || sent == want {
		return
	}
	now := s.cfg.now()
	s.names.mu.Lock()
	at, failed := s.names.failedAt[device]
	s.names.mu.Unlock()
	if failed && now.Sub(at) < renameRetry {
		return
	}
	if err := rename(ctx, want); err != nil {
		s.names.mu.Lock()
		if s.names.failedAt == nil || len(s.names.failedAt) >= maxCachedDevices {
			s.names.failedAt = map[string]time.Time{}
		}
		s.names.failedAt[device] = now
		s.names.mu.Unlock()
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Str("device", device).Str("name", want).Stringer("retry_in", renameRetry).
				Msg("cannot rename child device; data goes on under its old name")
		}
		return
	}
	s.names.mu.Lock()
	delete(s.names.failedAt, device)
	s.names.mu.Unlock()
	if err := s.recordName(ctx, device, want); err != nil {
		s.log.Warn().Err(err).Str("device", device).Msg("renamed child device, but could not record it; it may be renamed again")
		return
	}
	s.log.Info().Str("device", device).Str("old", sent).Str("name", want).Msg("renamed child device")
}

// inventoryName is the body of a rename.
func inventoryName(name string) []byte {
	b, _ := json.Marshal(map[string]string{"name": name})
	return b
}

// ensureNamedChild registers device (mqtt mode, in b as part of message
// msg) under its name, or renames it when its name changed.
func (l *mqttLink) ensureNamedChild(ctx context.Context, b *mqttpub.Batch, msg int, project, device string) error {
	name := l.s.childName(project, device)
	if err := l.ensureChild(ctx, b, msg, device, name); err != nil {
		return err
	}
	l.s.renameIfChanged(ctx, device, name, func(ctx context.Context, name string) error {
		if err := b.Send(sinks.Publication{Topic: "inventory/managedObjects/update/" + device, Payload: inventoryName(name)}, msg, false); err != nil {
			return err
		}
		return b.Flush()
	})
	return nil
}

// childID is the managed object id of device (rest mode), registered under
// its name, renamed when its name changed.
func (r *restLink) childID(ctx context.Context, project, device, gateway string) (string, error) {
	name := r.s.childName(project, device)
	id, err := r.deviceID(ctx, device, name, sensorType, gateway)
	if err != nil {
		return "", err
	}
	r.s.renameIfChanged(ctx, device, name, func(ctx context.Context, name string) error {
		return r.do(ctx, http.MethodPut, "/inventory/managedObjects/"+url.PathEscape(id), "managedObject", inventoryName(name), nil)
	})
	return id, nil
}
