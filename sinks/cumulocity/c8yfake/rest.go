package c8yfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
)

// The REST side: the endpoints the sink uses, with Basic auth, media type
// checks, validation and Cumulocity-shaped error bodies.

const (
	mediaPrefix = "application/vnd.com.nsn.cumulocity."
	errorInfo   = "https://cumulocity.com/guides/reference/rest-implementation/#error-reporting"
)

// result is what a handler decided; write renders it.
type result struct {
	status   int
	media    string // response media type name (e.g. "managedObject")
	body     any    // response object, sent only when the client sent Accept
	location string
	errCode  string // Cumulocity error name, e.g. "undefined/validationError"
	errMsg   string
}

func fail(status int, code, format string, args ...any) result {
	return result{status: status, errCode: code, errMsg: fmt.Sprintf(format, args...)}
}

type handlerFunc func(r *http.Request, user string, body []byte) result

type ctxKey struct{}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h handlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			user, _ := r.Context().Value(ctxKey{}).(string)
			body, _ := io.ReadAll(r.Body)
			s.write(w, r, user, h(r, user, body))
		})
	}
	handle("GET /identity/externalIds/{type}/{value}", s.getExternalID)
	handle("POST /identity/globalIds/{id}/externalIds", s.postExternalID)
	handle("POST /inventory/managedObjects", s.postManagedObject)
	handle("GET /inventory/managedObjects/{id}", s.getManagedObject)
	handle("PUT /inventory/managedObjects/{id}", s.putManagedObject)
	handle("POST /inventory/managedObjects/{id}/childDevices", s.postChildDevice)
	handle("POST /measurement/measurements", s.postMeasurements)
	handle("POST /event/events", s.postEvent)
	handle("POST /alarm/alarms", s.postAlarm)
	return s.middleware(mux)
}

// middleware authenticates and applies HTTP faults.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		login, password, _ := basicAuth(r.Header.Get("Authorization"))
		user, ok := s.checkUser(login, password, false)
		if bu, bok := s.bearerUser(r.Header.Get("Authorization")); bok {
			user, ok = bu, true
		}
		if !ok {
			s.write(w, r, login, fail(http.StatusUnauthorized, "security/Unauthorized", "Invalid credentials! : Bad credentials"))
			return
		}
		s.mu.Lock()
		f, hit := s.faults.takeHTTP(r, body)
		s.mu.Unlock()
		if hit && f.Delay > 0 {
			// The request is handled after the delay even if the client gave
			// up meanwhile, as a slow server would.
			select {
			case <-time.After(f.Delay):
			case <-s.closing:
				return
			}
		}
		if hit && f.Status != 0 {
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			s.write(w, r, user, fail(f.Status, faultErrorCode(f.Status), "Injected fault"))
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, user))
		if hit && f.ResetAfterStore {
			next.ServeHTTP(discardWriter{h: http.Header{}}, r)
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					if tc, ok := conn.(*net.TCPConn); ok {
						_ = tc.SetLinger(0) // reset, not an orderly close
					}
					_ = conn.Close()
				}
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

func faultErrorCode(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "general/tooManyRequests" // unverified name
	case http.StatusUnauthorized:
		return "security/Unauthorized"
	case http.StatusUnprocessableEntity:
		return "undefined/validationError"
	}
	return "general/internalError"
}

// discardWriter swallows a response (reset-after-store fault).
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d discardWriter) WriteHeader(int)             {}

// write renders a result: errors as Cumulocity error JSON (and recorded),
// created objects only when the client sent Accept.
func (s *Server) write(w http.ResponseWriter, r *http.Request, user string, res result) {
	if res.errCode != "" {
		b, _ := json.Marshal(map[string]string{"error": res.errCode, "message": res.errMsg, "info": errorInfo})
		s.mu.Lock()
		s.st.addError("rest", user, fmt.Sprintf("%d %s %s: %s", res.status, r.Method, r.URL.Path, b))
		s.mu.Unlock()
		w.Header().Set("Content-Type", mediaPrefix+"error+json;charset=UTF-8;ver=0.9")
		w.WriteHeader(res.status)
		_, _ = w.Write(b)
		return
	}
	if res.location != "" {
		w.Header().Set("Location", res.location)
	}
	send := res.body != nil && (r.Method == http.MethodGet || r.Header.Get("Accept") != "")
	if !send {
		w.WriteHeader(res.status)
		return
	}
	b, _ := json.Marshal(res.body)
	w.Header().Set("Content-Type", mediaPrefix+res.media+"+json;charset=UTF-8;ver=0.9")
	w.WriteHeader(res.status)
	_, _ = w.Write(b)
}

// checkMedia accepts the Cumulocity media type of one of names (any case,
// any parameters) or plain application/json; anything else is 415.
func checkMedia(r *http.Request, names ...string) (string, *result) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil {
		if mt == "application/json" {
			return "", nil
		}
		for _, n := range names {
			if mt == strings.ToLower(mediaPrefix+n+"+json") {
				return n, nil
			}
		}
	}
	res := fail(http.StatusUnsupportedMediaType, "general/unsupportedMediaType", "Unsupported media type %q", r.Header.Get("Content-Type"))
	return "", &res
}

// decodeObject decodes a JSON object keeping number text.
func decodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("body is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return m, nil
}

// readObject checks the media type against names and decodes the body as
// one JSON object: the opening of every handler that takes an object.
func readObject(r *http.Request, body []byte, names ...string) (string, map[string]any, *result) {
	media, res := checkMedia(r, names...)
	if res != nil {
		return "", nil, res
	}
	m, err := decodeObject(body)
	if err != nil {
		res := badJSON(err)
		return "", nil, &res
	}
	return media, m, nil
}

func badJSON(err error) result {
	return fail(http.StatusUnprocessableEntity, "undefined/validationError", "Could not read the document: %v", err)
}

// noObject is Cumulocity's answer for an unknown managed object id.
func noObject(id string) result {
	return fail(http.StatusNotFound, "inventory/Not Found", "Finding device data from database failed : No managedObject for id '%s'!", id)
}

func (s *Server) self(path string) string { return s.URL() + path }

// identity --------------------------------------------------------------------

func (s *Server) extRepr(typ, value, id string) map[string]any {
	return map[string]any{
		"externalId":    value,
		"type":          typ,
		"self":          s.self("/identity/externalIds/" + typ + "/" + value),
		"managedObject": map[string]string{"id": id, "self": s.self("/inventory/managedObjects/" + id)},
	}
}

func (s *Server) getExternalID(r *http.Request, _ string, _ []byte) result {
	typ, value := r.PathValue("type"), r.PathValue("value")
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.st.lookupExt(typ, value)
	reg := Registration{Via: "rest", Op: "lookup", ExternalID: value, ID: id, Status: http.StatusOK}
	if !ok {
		reg.Status = http.StatusNotFound
	}
	s.st.addReg(reg)
	if !ok {
		return fail(http.StatusNotFound, "identity/Not Found", "External id not found; external id = ID [type=%s, value=%s]", typ, value)
	}
	return result{status: http.StatusOK, media: "externalId", body: s.extRepr(typ, value, id)}
}

func (s *Server) postExternalID(r *http.Request, _ string, body []byte) result {
	_, m, res := readObject(r, body, "externalId")
	if res != nil {
		return *res
	}
	typ, _ := m["type"].(string)
	value, _ := m["externalId"].(string)
	if typ == "" || value == "" {
		return fail(http.StatusUnprocessableEntity, "undefined/validationError", "Following mandatory fields should be included: type,externalId")
	}
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.st.bindExt(typ, value, id)
	reg := Registration{Via: "rest", Op: "bind", ExternalID: value, ID: id, Status: http.StatusCreated}
	defer func() { s.st.addReg(reg) }()
	switch {
	case errors.Is(err, errNotFound):
		reg.Status = http.StatusNotFound
		return noObject(id)
	case errors.Is(err, errConflict):
		// unverified: also answered when the id is bound to this same object
		reg.Status = http.StatusConflict
		return fail(http.StatusConflict, "identity/Conflict", "External id already exists; external id = ID [type=%s, value=%s]", typ, value)
	}
	return result{status: http.StatusCreated, media: "externalId", body: s.extRepr(typ, value, id),
		location: s.self("/identity/externalIds/" + typ + "/" + value)}
}

// inventory -------------------------------------------------------------------

func (s *Server) moRepr(mo *ManagedObject) map[string]any {
	out := map[string]any{}
	for k, v := range mo.Fragments {
		out[k] = v
	}
	out["id"] = mo.ID
	out["self"] = s.self("/inventory/managedObjects/" + mo.ID)
	if mo.Name != "" {
		out["name"] = mo.Name
	}
	if mo.Type != "" {
		out["type"] = mo.Type
	}
	if mo.IsDevice {
		out["c8y_IsDevice"] = map[string]any{}
	}
	refs := []any{}
	for _, c := range mo.Children {
		refs = append(refs, map[string]any{"managedObject": map[string]string{"id": c, "self": s.self("/inventory/managedObjects/" + c)}})
	}
	out["childDevices"] = map[string]any{"references": refs}
	if p := mo.Position; p != nil {
		pos := map[string]any{"lat": p.Lat, "lng": p.Lng}
		if p.Alt != nil {
			pos["alt"] = *p.Alt
		}
		if p.Accuracy != nil {
			pos["accuracy"] = *p.Accuracy
		}
		out["c8y_Position"] = pos
	}
	return out
}

// applyFragments writes the members of m onto mo: name, type, c8y_IsDevice,
// c8y_Position (validated) and any other fragment kept raw (as it stands in
// body, the document m was decoded from).
func applyFragments(mo *ManagedObject, m map[string]any, body []byte) *result {
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(body, &raw)
	for k, v := range m {
		switch k {
		case "id", "self", "childDevices", "childAssets", "childAdditions", "owner", "creationTime", "lastUpdated":
		case "name", "type":
			sv, ok := v.(string)
			if !ok {
				res := fail(http.StatusUnprocessableEntity, "undefined/validationError", "%s must be a string", k)
				return &res
			}
			if k == "name" {
				mo.Name = sv
			} else {
				mo.Type = sv
			}
		case "c8y_IsDevice":
			mo.IsDevice = true
		case "c8y_Position":
			p, err := positionOf(v)
			if err != nil {
				res := fail(http.StatusUnprocessableEntity, "undefined/validationError", "c8y_Position: %v", err)
				return &res
			}
			mo.Position = p
		default:
			if err := checkName("fragment", k); err != nil {
				res := fail(http.StatusUnprocessableEntity, "undefined/validationError", "%v", err)
				return &res
			}
			mo.Fragments[k] = raw[k]
		}
	}
	return nil
}

func positionOf(v any) (*Position, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not an object")
	}
	var err error // the first member that is not a number
	num := func(k string, mandatory bool) *float64 {
		if err != nil {
			return nil
		}
		v, present := m[k]
		n, ok := v.(json.Number)
		switch {
		case ok:
			f, perr := parseNumber(n.String())
			err = perr
			return &f
		case present || mandatory:
			err = fmt.Errorf("%s is not a number", k)
		}
		return nil
	}
	lat, lng, alt, acc := num("lat", true), num("lng", true), num("alt", false), num("accuracy", false)
	if err != nil {
		return nil, err
	}
	return &Position{Lat: *lat, Lng: *lng, Alt: alt, Accuracy: acc}, nil
}

func (s *Server) postManagedObject(r *http.Request, user string, body []byte) result {
	_, m, res := readObject(r, body, "managedObject")
	if res != nil {
		return *res
	}
	mo := &ManagedObject{Fragments: map[string]json.RawMessage{}}
	if res := applyFragments(mo, m, body); res != nil {
		return *res
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	created := s.st.createMO(mo.Name, mo.Type, user, mo.IsDevice, mo.Fragments)
	created.Position = mo.Position
	s.st.addReg(Registration{Via: "rest", Op: "create", ID: created.ID, Created: true, Status: http.StatusCreated})
	return result{status: http.StatusCreated, media: "managedObject", body: s.moRepr(created),
		location: s.self("/inventory/managedObjects/" + created.ID)}
}

func (s *Server) getManagedObject(r *http.Request, _ string, _ []byte) result {
	s.mu.Lock()
	defer s.mu.Unlock()
	mo, ok := s.st.mos[r.PathValue("id")]
	if !ok {
		return noObject(r.PathValue("id"))
	}
	return result{status: http.StatusOK, media: "managedObject", body: s.moRepr(mo)}
}

func (s *Server) putManagedObject(r *http.Request, _ string, body []byte) result {
	_, m, res := readObject(r, body, "managedObject")
	if res != nil {
		return *res
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mo, ok := s.st.mos[r.PathValue("id")]
	if !ok {
		return noObject(r.PathValue("id"))
	}
	// Validate on a copy so a bad update changes nothing.
	upd := mo.clone()
	if res := applyFragments(&upd, m, body); res != nil {
		return *res
	}
	*mo = upd
	return result{status: http.StatusOK, media: "managedObject", body: s.moRepr(mo)}
}

func (s *Server) postChildDevice(r *http.Request, _ string, body []byte) result {
	if _, res := checkMedia(r, "managedObjectReference"); res != nil {
		return *res
	}
	var ref struct {
		ManagedObject struct {
			ID string `json:"id"`
		} `json:"managedObject"`
	}
	if err := json.Unmarshal(body, &ref); err != nil {
		return badJSON(err)
	}
	child := ref.ManagedObject.ID
	if child == "" {
		return fail(http.StatusUnprocessableEntity, "undefined/validationError", "Following mandatory fields should be included: managedObject.id")
	}
	parent := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := Registration{Via: "rest", Op: "link", ID: child, Parent: parent, ExternalID: "", Status: http.StatusCreated}
	defer func() { s.st.addReg(reg) }()
	// Linking an already linked child answers 201 again (unverified).
	if err := s.st.link(parent, child, "rest"); err != nil {
		reg.Status = http.StatusNotFound
		return fail(http.StatusNotFound, "inventory/Not Found", "Finding device data from database failed : No managedObject for id '%s' or '%s'!", parent, child)
	}
	return result{status: http.StatusCreated, media: "managedObjectReference",
		body: map[string]any{"managedObject": map[string]string{"id": child}}}
}

// measurements, events, alarms ----------------------------------------------------

// reserved are the top-level members of measurements, events and alarms that
// are properties, not fragments.
var reserved = map[string]bool{
	"id": true, "self": true, "source": true, "type": true, "time": true, "text": true,
	"creationTime": true, "lastUpdated": true, "severity": true, "status": true, "count": true,
}

// common validates source, type and time (and text when wantText) and
// returns the source object. The mutex must be held.
func (s *Server) common(m map[string]any, user string, wantText bool) (mo *ManagedObject, typ, text string, t time.Time, timeText string, res *result) {
	var missing []string
	var srcID string
	if src, ok := m["source"].(map[string]any); ok {
		switch v := src["id"].(type) {
		case string:
			srcID = v
		case json.Number:
			srcID = v.String()
		}
	}
	if srcID == "" {
		missing = append(missing, "source")
	}
	typ, _ = m["type"].(string)
	if typ == "" {
		missing = append(missing, "type")
	}
	if wantText {
		text, _ = m["text"].(string)
		if text == "" {
			missing = append(missing, "text")
		}
	}
	timeText, _ = m["time"].(string)
	if timeText == "" {
		missing = append(missing, "time")
	}
	fail422 := func(format string, args ...any) *result {
		r := fail(http.StatusUnprocessableEntity, "undefined/validationError", format, args...)
		return &r
	}
	if len(missing) > 0 {
		return nil, "", "", time.Time{}, "", fail422("Following mandatory fields should be included: %s", strings.Join(missing, ","))
	}
	var err error
	if t, err = parseTime(timeText); err != nil {
		return nil, "", "", time.Time{}, "", fail422("%v", err)
	}
	mo = s.st.mos[srcID]
	if mo == nil || !s.st.ownedBy(mo, user) {
		// Cumulocity answers an unknown or foreign source with a
		// validation error here (reference §5; exact text unverified).
		return nil, "", "", time.Time{}, "", fail422("Source with id %s not found or not accessible", srcID)
	}
	return mo, typ, text, t, timeText, nil
}

// measurementOf validates one measurement. The mutex must be held.
func (s *Server) measurementOf(m map[string]any, user string) (Measurement, *result) {
	mo, typ, _, t, tt, res := s.common(m, user, false)
	if res != nil {
		return Measurement{}, res
	}
	out := Measurement{Source: mo.ID, Type: typ, Time: t, TimeText: tt, Fragments: map[string]map[string]Series{}, Via: "rest"}
	fail422 := func(format string, args ...any) (Measurement, *result) {
		r := fail(http.StatusUnprocessableEntity, "undefined/validationError", format, args...)
		return Measurement{}, &r
	}
	for frag, v := range m {
		if reserved[frag] {
			continue
		}
		series, ok := v.(map[string]any)
		if !ok {
			continue // a custom property, not a fragment of series
		}
		if err := checkName("fragment", frag); err != nil {
			return fail422("%v", err)
		}
		out.Fragments[frag] = map[string]Series{}
		for name, sv := range series {
			if err := checkName("series", name); err != nil {
				return fail422("%v", err)
			}
			obj, ok := sv.(map[string]any)
			if !ok {
				return fail422("%s.%s is not a series object", frag, name)
			}
			num, ok := obj["value"].(json.Number)
			if !ok {
				return fail422("%s.%s.value is missing or not a number", frag, name)
			}
			f, err := parseNumber(num.String())
			if err != nil {
				return fail422("%s.%s: %v", frag, name, err)
			}
			unit, _ := obj["unit"].(string)
			out.Fragments[frag][name] = Series{Value: f, Text: num.String(), Unit: unit}
		}
	}
	return out, nil
}

// postMeasurements takes one measurement or a collection. A collection is
// all or nothing: one invalid measurement refuses the request and stores
// none (unverified).
func (s *Server) postMeasurements(r *http.Request, user string, body []byte) result {
	media, m, res := readObject(r, body, "measurement", "measurementCollection")
	if res != nil {
		return *res
	}
	var items []map[string]any
	list, isList := m["measurements"].([]any)
	switch {
	case media == "measurementCollection" || (media == "" && isList):
		if !isList {
			return fail(http.StatusUnprocessableEntity, "undefined/validationError", "Following mandatory fields should be included: measurements")
		}
		for i, it := range list {
			obj, ok := it.(map[string]any)
			if !ok {
				return fail(http.StatusUnprocessableEntity, "undefined/validationError", "measurements[%d] is not an object", i)
			}
			items = append(items, obj)
		}
	default:
		items = []map[string]any{m}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	valid := make([]Measurement, 0, len(items))
	for i, it := range items {
		ms, res := s.measurementOf(it, user)
		if res != nil {
			if len(items) > 1 || isList {
				res.errMsg = fmt.Sprintf("measurements[%d]: %s", i, res.errMsg)
			}
			return *res
		}
		valid = append(valid, ms)
	}
	for _, ms := range valid {
		s.st.addMeasurement(ms)
	}
	if media == "measurement" || !isList {
		return result{status: http.StatusCreated, media: "measurement", body: map[string]any{"id": s.st.measurements[len(s.st.measurements)-1].ID}}
	}
	return result{status: http.StatusCreated, media: "measurementCollection", body: map[string]any{"measurements": len(valid)}}
}

// postSourced is the common part of postEvent and postAlarm: one object of
// media with a valid source, type, text and time, stored by store under the
// mutex.
func (s *Server) postSourced(r *http.Request, user string, body []byte, media string,
	store func(m map[string]any, mo *ManagedObject, typ, text string, t time.Time, tt string) result) result {
	_, m, res := readObject(r, body, media)
	if res != nil {
		return *res
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mo, typ, text, t, tt, res := s.common(m, user, true)
	if res != nil {
		return *res
	}
	return store(m, mo, typ, text, t, tt)
}

func (s *Server) postEvent(r *http.Request, user string, body []byte) result {
	return s.postSourced(r, user, body, "event", func(m map[string]any, mo *ManagedObject, typ, text string, t time.Time, tt string) result {
		e := Event{Source: mo.ID, Type: typ, Text: text, Time: t, TimeText: tt, Via: "rest"}
		if p, ok := m["c8y_Position"]; ok {
			pos, err := positionOf(p)
			if err != nil {
				return fail(http.StatusUnprocessableEntity, "undefined/validationError", "c8y_Position: %v", err)
			}
			e.Position = pos
		}
		e = s.st.addEvent(e)
		return result{status: http.StatusCreated, media: "event", body: map[string]any{"id": e.ID, "type": e.Type, "text": e.Text}}
	})
}

func (s *Server) postAlarm(r *http.Request, user string, body []byte) result {
	return s.postSourced(r, user, body, "alarm", func(m map[string]any, mo *ManagedObject, typ, text string, t time.Time, _ string) result {
		sev, _ := m["severity"].(string)
		if !validSeverity(strings.ToUpper(sev)) {
			return fail(http.StatusUnprocessableEntity, "undefined/validationError", "Following mandatory fields should be included: severity")
		}
		a := s.st.raiseAlarm(Alarm{Source: mo.ID, Type: typ, Text: text, Severity: strings.ToUpper(sev), Time: t, Via: "rest"})
		return result{status: http.StatusCreated, media: "alarm", body: map[string]any{"id": a.ID, "count": a.Count, "status": a.Status}}
	})
}
