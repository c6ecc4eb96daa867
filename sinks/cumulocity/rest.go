package cumulocity

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// Mode rest: the REST API, delivered on 2xx.
//
// Registration (first use of a device, ids cached in State):
// GET /identity/externalIds/c8y_Serial/<id>; on 404 POST
// /inventory/managedObjects then POST /identity/globalIds/<mo>/externalIds;
// children are then linked with POST /inventory/managedObjects/<gw>/childDevices.
//
// Delivery: consecutive messages are sent as a run: all their measurements
// in one measurementCollection request, then their events and locations
// (events have no collection API) in message order. If the collection is
// refused as invalid the run is retried one message at a time to find the
// message at fault, which is then reported permanent. Before reporting a
// message permanent, the sink checks that its device's managed object still
// exists; if it was deleted, the cached id is dropped and the error is
// transient, so the device is registered again on the retry.

const (
	mediaPrefix = "application/vnd.com.nsn.cumulocity."
	// run limits: messages and body bytes per measurementCollection.
	maxRunMessages = 200
	maxRunBytes    = 512 << 10
)

func media(name string) string { return mediaPrefix + name + "+json;charset=UTF-8;ver=0.9" }

// httpError is a non-2xx reply.
type httpError struct {
	method, path string
	status       int
	body         string
	retryAfter   string
}

func (e *httpError) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.status, http.StatusText(e.status))
	if e.body != "" {
		s += ": " + e.body
	}
	if e.retryAfter != "" {
		s += " (Retry-After " + e.retryAfter + ")"
	}
	return s
}

// invalid reports whether the reply says the request itself is invalid, so
// that repeating it cannot succeed: 400, 413, 422. Every other status is
// treated as transient, 403/404/405/415 included: those come from a
// configuration problem (permissions, URL) that an operator fixes, and
// retrying keeps the data until then.
func (e *httpError) invalid() bool {
	switch e.status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

func isInvalid(err error) bool {
	var he *httpError
	return errors.As(err, &he) && he.invalid()
}

func isStatus(err error, status int) bool {
	var he *httpError
	return errors.As(err, &he) && he.status == status
}

type restLink struct {
	s    *Sink
	base string // URL without trailing slash
	hc   *http.Client
	auth string       // Basic login; "" with certificate login
	tok  *tokenSource // certificate login only

	reachable atomic.Bool // last request answered, and not with 401/403

	mu  sync.Mutex
	ids map[string]string // external id → managed object id (cache of State)
}

// newRESTLink talks to u, whose scheme Validate checked.
func newRESTLink(s *Sink, u *url.URL, tlsCfg *tls.Config) (*restLink, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.Proxy = nil
	r := &restLink{
		s:    s,
		base: strings.TrimRight(u.String(), "/"),
		hc:   &http.Client{Transport: tr},
		ids:  map[string]string{},
	}
	if s.certLogin {
		r.tok = &tokenSource{s: s, hc: r.hc, url: s.cfg.TokenURL}
	} else {
		login := s.cfg.Tenant + "/" + s.cfg.Username + ":" + s.cfg.Password
		r.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(login))
	}
	return r, nil
}

func (r *restLink) close() { r.hc.CloseIdleConnections() }

// do sends one request. out, when set, receives the decoded reply (the
// request then sends Accept). With certificate login a 401 renews the
// device access token and the request is sent once more.
func (r *restLink) do(ctx context.Context, method, path, mediaType string, body []byte, out any) error {
	if r.tok == nil {
		return r.doAuth(ctx, r.auth, method, path, mediaType, body, out)
	}
	for attempt := 0; ; attempt++ {
		tok, err := r.tok.get(ctx)
		if err != nil {
			r.reachable.Store(false)
			return err
		}
		err = r.doAuth(ctx, "Bearer "+tok, method, path, mediaType, body, out)
		if attempt > 0 || !isStatus(err, http.StatusUnauthorized) {
			return err
		}
		r.tok.refused(tok)
	}
}

func (r *restLink) doAuth(ctx context.Context, auth, method, path, mediaType string, body []byte, out any) error {
	ctx, cancel := r.s.opCtx(ctx)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", auth)
	if body != nil {
		req.Header.Set("Content-Type", media(mediaType))
	}
	if out != nil {
		req.Header.Set("Accept", media(mediaType)+", "+media("error"))
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		r.reachable.Store(false)
		if r.s.closeCtx.Err() != nil {
			return ErrClosed
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	r.reachable.Store(resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden)
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &httpError{method: method, path: path, status: resp.StatusCode,
			body: strings.TrimSpace(string(data[:min(len(data), 512)])), retryAfter: resp.Header.Get("Retry-After")}
	}
	if err != nil {
		return fmt.Errorf("%s %s: read reply: %w", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode reply: %w", method, path, err)
		}
	}
	return nil
}

// Registration ---------------------------------------------------------------

type idRef struct {
	ID string `json:"id"`
}

// deviceID returns the managed object id of external id ext, registering
// it (and linking it under parent when set) on first use.
func (r *restLink) deviceID(ctx context.Context, ext, name, typ, parent string) (string, error) {
	r.mu.Lock()
	id := r.ids[ext]
	r.mu.Unlock()
	if id != "" {
		return id, nil
	}
	key := r.s.moKey(ext)
	v, err := r.s.state.Get(key)
	if err != nil {
		return "", fmt.Errorf("read state: %w", err)
	}
	if len(v) > 0 {
		r.remember(ext, string(v))
		return string(v), nil
	}

	id, err = r.lookup(ctx, ext)
	if err != nil {
		return "", err
	}
	if id == "" {
		body, _ := json.Marshal(map[string]any{"name": name, "type": typ, "c8y_IsDevice": map[string]any{}})
		var mo idRef
		if err := r.do(ctx, http.MethodPost, "/inventory/managedObjects", "managedObject", body, &mo); err != nil {
			return "", fmt.Errorf("create device %s: %w", ext, err)
		}
		if mo.ID == "" {
			return "", fmt.Errorf("create device %s: reply has no id", ext)
		}
		body, _ = json.Marshal(map[string]string{"type": "c8y_Serial", "externalId": ext})
		err := r.do(ctx, http.MethodPost, "/identity/globalIds/"+url.PathEscape(mo.ID)+"/externalIds", "externalId", body, nil)
		switch {
		case isStatus(err, http.StatusConflict):
			// Bound meanwhile (another gateway instance?): use that object.
			if id, err = r.lookup(ctx, ext); err != nil {
				return "", err
			}
			if id == "" {
				return "", fmt.Errorf("bind external id %s: conflict, yet not found", ext)
			}
			r.s.log.Warn().Str("external_id", ext).Str("unused", mo.ID).Str("id", id).
				Msg("external id was bound concurrently; a managed object was created for nothing")
		case err != nil:
			return "", fmt.Errorf("bind external id %s: %w", ext, err)
		default:
			id = mo.ID
		}
	}
	if parent != "" {
		body, _ := json.Marshal(map[string]any{"managedObject": idRef{ID: id}})
		err := r.do(ctx, http.MethodPost, "/inventory/managedObjects/"+url.PathEscape(parent)+"/childDevices", "managedObjectReference", body, nil)
		if err != nil && !isStatus(err, http.StatusConflict) { // 409: already linked
			return "", fmt.Errorf("link child %s: %w", ext, err)
		}
	}
	if err := r.s.state.Put(ctx, key, []byte(id)); err != nil {
		return "", fmt.Errorf("record device %s: %w", ext, err)
	}
	r.remember(ext, id)
	r.s.log.Info().Str("external_id", ext).Str("id", id).Msg("registered device")
	return id, nil
}

func (r *restLink) remember(ext, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids) >= maxCachedDevices {
		clear(r.ids) // a cache of State: bounded, see maxCachedDevices
	}
	r.ids[ext] = id
}

// forget drops a cached id whose managed object no longer exists.
func (r *restLink) forget(ctx context.Context, ext string) error {
	r.mu.Lock()
	delete(r.ids, ext)
	r.mu.Unlock()
	return r.s.state.Put(ctx, r.s.moKey(ext), nil)
}

// lookup returns the managed object id bound to external id ext, "" on 404.
func (r *restLink) lookup(ctx context.Context, ext string) (string, error) {
	var ref struct {
		ManagedObject idRef `json:"managedObject"`
	}
	err := r.do(ctx, http.MethodGet, "/identity/externalIds/c8y_Serial/"+url.PathEscape(ext), "externalId", nil, &ref)
	switch {
	case isStatus(err, http.StatusNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look up device %s: %w", ext, err)
	case ref.ManagedObject.ID == "":
		return "", fmt.Errorf("look up device %s: reply has no managed object id", ext)
	}
	return ref.ManagedObject.ID, nil
}

func (r *restLink) gatewayID(ctx context.Context) (string, error) {
	return r.deviceID(ctx, r.s.cfg.GatewayID, r.s.cfg.DeviceName, gatewayType, "")
}

// Delivery ---------------------------------------------------------------------

// item is one message ready to send.
type item struct {
	mp     mapped
	source string // managed object id
	ext    string // its external id
}

// maxRetryAfter caps how long Publish honours a Retry-After.
const maxRetryAfter = time.Minute

func (r *restLink) publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	n, err := r.deliver(ctx, msgs)
	r.retryAfter(ctx, err)
	return n, err
}

// retryAfter waits as long as a 429 or 503 reply asked (in seconds, capped
// by maxRetryAfter) before Publish returns, so that the forwarder's retry,
// which starts at 100 ms, does not hammer a throttling tenant. Whether
// Cumulocity sends Retry-After is unverified; without it, nothing waits.
func (r *restLink) retryAfter(ctx context.Context, err error) {
	var he *httpError
	if !errors.As(err, &he) || (he.status != http.StatusTooManyRequests && he.status != http.StatusServiceUnavailable) {
		return
	}
	secs, perr := strconv.Atoi(strings.TrimSpace(he.retryAfter))
	if perr != nil || secs <= 0 {
		return
	}
	t := time.NewTimer(min(time.Duration(secs)*time.Second, maxRetryAfter))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-r.s.closeCtx.Done():
	}
}

func (r *restLink) deliver(ctx context.Context, msgs []sinks.Message) (int, error) {
	gw, err := r.gatewayID(ctx)
	if err != nil {
		// Never the message's fault: transient whatever the status.
		return 0, err
	}
	i := 0
	for i < len(msgs) {
		var (
			run     []item
			size    int
			stopErr error
		)
		for j := i; j < len(msgs) && len(run) < maxRunMessages && size < maxRunBytes; j++ {
			mp, err := mapMessage(msgs[j])
			if err != nil {
				stopErr = err
				break
			}
			it := item{mp: mp, source: gw, ext: r.s.cfg.GatewayID}
			if mp.device != "" {
				it.ext = mp.device
				if it.source, err = r.childID(ctx, msgs[j].Project, mp.device, gw); err != nil { // names.go
					stopErr = classify(err)
					break
				}
			}
			run = append(run, it)
			size += len(msgs[j].Body)
		}
		n, err := r.postRun(ctx, run)
		r.s.delivered(mapsOf(run[:n]))
		i += n
		if err != nil {
			return i, err
		}
		if stopErr != nil {
			return i, stopErr
		}
	}
	return len(msgs), nil
}

func mapsOf(run []item) []mapped {
	out := make([]mapped, len(run))
	for i, it := range run {
		out[i] = it.mp
	}
	return out
}

// classify turns a failed child registration into the error Publish
// returns: an invalid reply makes the message permanent (ErrPermanent).
func classify(err error) error {
	if !isInvalid(err) {
		return err
	}
	return fmt.Errorf("%w: %w", sinks.ErrPermanent, err)
}

// postRun delivers a run and returns how many of its messages went through.
func (r *restLink) postRun(ctx context.Context, run []item) (int, error) {
	if len(run) == 0 {
		return 0, nil
	}
	var ms [][]byte
	for _, it := range run {
		ms = appendMeasurements(ms, it)
	}
	if len(ms) > 0 {
		err := r.postMeasurements(ctx, ms)
		switch {
		case err == nil:
		case isInvalid(err) && len(run) > 1:
			r.s.log.Warn().Err(err).Int("messages", len(run)).Msg("measurement batch refused; sending one message at a time to find the invalid one")
			return r.oneByOne(ctx, run)
		case isInvalid(err):
			return 0, r.refused(ctx, run[0], err)
		default:
			return 0, err
		}
	}
	for k, it := range run {
		if err := r.postOthers(ctx, it); err != nil {
			if isInvalid(err) {
				return k, r.refused(ctx, it, err)
			}
			return k, err
		}
	}
	return len(run), nil
}

// oneByOne delivers a run message by message.
func (r *restLink) oneByOne(ctx context.Context, run []item) (int, error) {
	for k, it := range run {
		if ms := appendMeasurements(nil, it); len(ms) > 0 {
			if err := r.postMeasurements(ctx, ms); err != nil {
				if isInvalid(err) {
					return k, r.refused(ctx, it, err)
				}
				return k, err
			}
		}
		if err := r.postOthers(ctx, it); err != nil {
			if isInvalid(err) {
				return k, r.refused(ctx, it, err)
			}
			return k, err
		}
	}
	return len(run), nil
}

// refused decides about a message Cumulocity called invalid: permanent,
// unless its device's managed object is gone (deleted in Cumulocity while
// cached here), in which case the id is forgotten and the error transient.
// (A re-created gateway does not get the children it had linked again:
// their ids stay cached.)
func (r *restLink) refused(ctx context.Context, it item, err error) error {
	gerr := r.do(ctx, http.MethodGet, "/inventory/managedObjects/"+url.PathEscape(it.source), "managedObject", nil, nil)
	if isStatus(gerr, http.StatusNotFound) {
		if ferr := r.forget(ctx, it.ext); ferr != nil {
			return ferr
		}
		return fmt.Errorf("device %s (managed object %s) no longer exists in Cumulocity; registering it again: %w", it.ext, it.source, err)
	}
	return fmt.Errorf("%w: %w", sinks.ErrPermanent, err)
}

func (r *restLink) postMeasurements(ctx context.Context, ms [][]byte) error {
	var b bytes.Buffer
	b.WriteString(`{"measurements":[`)
	b.Write(bytes.Join(ms, []byte{','}))
	b.WriteString(`]}`)
	return r.do(ctx, http.MethodPost, "/measurement/measurements", "measurementCollection", b.Bytes(), nil)
}

// postOthers sends a message's events and locations.
func (r *restLink) postOthers(ctx context.Context, it item) error {
	t := formatTime(it.mp.time)
	for _, rec := range it.mp.records {
		switch rec.kind {
		case recEvent:
			body := eventJSON(it.source, rec.typ, rec.text, t, nil)
			if err := r.do(ctx, http.MethodPost, "/event/events", "event", body, nil); err != nil {
				return err
			}
		case recLocation:
			pos := positionJSON(rec)
			body := eventJSON(it.source, locationType, locationText, t, pos)
			if err := r.do(ctx, http.MethodPost, "/event/events", "event", body, nil); err != nil {
				return err
			}
			upd := append(append([]byte(`{"c8y_Position":`), pos...), '}')
			if err := r.do(ctx, http.MethodPut, "/inventory/managedObjects/"+url.PathEscape(it.source), "managedObject", upd, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendMeasurements appends the measurement JSON objects of it.
func appendMeasurements(dst [][]byte, it item) [][]byte {
	t := formatTime(it.mp.time)
	for _, rec := range it.mp.records {
		if rec.kind != recMeasurement {
			continue
		}
		b := []byte(`{"source":{"id":`)
		b = wittra.AppendQuoted(b, it.source)
		b = append(b, `},"type":`...)
		b = wittra.AppendQuoted(b, rec.typ)
		b = append(b, `,"time":`...)
		b = wittra.AppendQuoted(b, t)
		for _, f := range rec.frags {
			b = append(b, ',')
			b = wittra.AppendQuoted(b, f.name)
			b = append(b, ":{"...)
			for i, s := range f.series {
				if i > 0 {
					b = append(b, ',')
				}
				b = wittra.AppendQuoted(b, s.name)
				b = append(b, `:{"value":`...)
				b = append(b, s.value...) // number text as received
				if s.unit != "" {
					b = append(b, `,"unit":`...)
					b = wittra.AppendQuoted(b, s.unit)
				}
				b = append(b, '}')
			}
			b = append(b, '}')
		}
		dst = append(dst, append(b, '}'))
	}
	return dst
}

func positionJSON(rec record) []byte {
	b := []byte(`{"lat":`)
	b = append(b, rec.lat...)
	b = append(b, `,"lng":`...)
	b = append(b, rec.lng...)
	if rec.alt != "" {
		b = append(b, `,"alt":`...)
		b = append(b, rec.alt...)
	}
	if rec.acc != "" {
		b = append(b, `,"accuracy":`...)
		b = append(b, rec.acc...)
	}
	return append(b, '}')
}

func eventJSON(source, typ, text, t string, pos []byte) []byte {
	b := []byte(`{"source":{"id":`)
	b = wittra.AppendQuoted(b, source)
	b = append(b, `},"type":`...)
	b = wittra.AppendQuoted(b, typ)
	b = append(b, `,"text":`...)
	b = wittra.AppendQuoted(b, text)
	b = append(b, `,"time":`...)
	b = wittra.AppendQuoted(b, t)
	if pos != nil {
		b = append(b, `,"c8y_Position":`...)
		b = append(b, pos...)
	}
	return append(b, '}')
}
