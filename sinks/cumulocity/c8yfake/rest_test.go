package c8yfake

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type client struct {
	t    *testing.T
	s    *Server
	auth string
}

func restClient(t *testing.T, s *Server) *client {
	return &client{t: t, s: s, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(s.Tenant()+"/"+DefaultUser+":"+DefaultPassword))}
}

// do sends a request; media "" sends no Content-Type, accept adds Accept.
func (c *client) do(method, path, media, body string, accept bool) (int, http.Header, map[string]any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, c.s.URL()+path, strings.NewReader(body))
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if media != "" {
		req.Header.Set("Content-Type", media)
	}
	if accept {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, resp.Header, out
}

func vnd(t string) string {
	return "application/vnd.com.nsn.cumulocity." + t + "+json;charset=UTF-8;ver=0.9"
}

// device creates a device with a c8y_Serial and returns its id.
func (c *client) device(serial string) string {
	c.t.Helper()
	code, _, mo := c.do("POST", "/inventory/managedObjects", vnd("managedObject"), `{"name":"d","c8y_IsDevice":{}}`, true)
	if code != 201 {
		c.t.Fatalf("create: %d", code)
	}
	id := mo["id"].(string)
	if code, _, _ := c.do("POST", "/identity/globalIds/"+id+"/externalIds", vnd("externalId"), fmt.Sprintf(`{"type":"c8y_Serial","externalId":%q}`, serial), false); code != 201 {
		c.t.Fatalf("bind: %d", code)
	}
	return id
}

func TestRESTAuth(t *testing.T) {
	s := start(t)
	c := restClient(t, s)
	for name, auth := range map[string]string{
		"None":     "",
		"Wrong":    "Basic " + base64.StdEncoding.EncodeToString([]byte(s.Tenant()+"/"+DefaultUser+":x")),
		"OtherTen": "Basic " + base64.StdEncoding.EncodeToString([]byte("t9/"+DefaultUser+":"+DefaultPassword)),
		"Garbage":  "Basic !!!",
	} {
		c.auth = auth
		code, _, body := c.do("GET", "/identity/externalIds/c8y_Serial/x", "", "", false)
		if code != 401 || body["error"] != "security/Unauthorized" {
			t.Errorf("%s: %d %v", name, code, body)
		}
	}
	// the tenant prefix is optional on the tenant's own domain
	c.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(DefaultUser+":"+DefaultPassword))
	if code, _, _ := c.do("GET", "/identity/externalIds/c8y_Serial/x", "", "", false); code != 404 {
		t.Errorf("user without tenant: %d, want 404", code)
	}
}

func TestRESTIdentityAndInventory(t *testing.T) {
	s := start(t)
	c := restClient(t, s)
	code, _, body := c.do("GET", "/identity/externalIds/c8y_Serial/gw", "", "", false)
	if code != 404 || body["error"] != "identity/Not Found" || !strings.Contains(body["message"].(string), "value=gw") {
		t.Errorf("lookup unknown: %d %v", code, body)
	}
	// POST returns the object only with Accept
	code, hdr, body := c.do("POST", "/inventory/managedObjects", vnd("managedObject"), `{"name":"n"}`, false)
	if code != 201 || body != nil || !strings.Contains(hdr.Get("Location"), "/inventory/managedObjects/") {
		t.Errorf("create without Accept: %d %v %v", code, body, hdr)
	}
	gw := c.device("gw")
	code, _, body = c.do("GET", "/identity/externalIds/c8y_Serial/gw", "", "", false)
	if code != 200 || body["managedObject"].(map[string]any)["id"] != gw {
		t.Errorf("lookup: %d %v", code, body)
	}
	if code, _, _ := c.do("POST", "/identity/globalIds/"+gw+"/externalIds", vnd("externalId"), `{"type":"c8y_Serial","externalId":"gw"}`, false); code != 409 {
		t.Errorf("bind again: %d, want 409", code)
	}
	if code, _, _ := c.do("POST", "/identity/globalIds/999999/externalIds", vnd("externalId"), `{"type":"c8y_Serial","externalId":"zz"}`, false); code != 404 {
		t.Errorf("bind to unknown object: %d, want 404", code)
	}
	if code, _, _ := c.do("POST", "/identity/globalIds/"+gw+"/externalIds", vnd("externalId"), `{"type":"c8y_Serial"}`, false); code != 422 {
		t.Errorf("bind without externalId: %d, want 422", code)
	}
	kid := c.device("kid")
	ref := fmt.Sprintf(`{"managedObject":{"id":%q}}`, kid)
	for range 2 { // repeat links are accepted (unverified)
		if code, _, _ := c.do("POST", "/inventory/managedObjects/"+gw+"/childDevices", vnd("managedObjectReference"), ref, false); code != 201 {
			t.Errorf("link: %d", code)
		}
	}
	if code, _, _ := c.do("POST", "/inventory/managedObjects/999999/childDevices", vnd("managedObjectReference"), ref, false); code != 404 {
		t.Errorf("link under unknown parent: %d", code)
	}
	if links := s.ChildLinks(); len(links) != 1 || links[0].Parent != gw || links[0].Child != kid {
		t.Errorf("links %+v", links)
	}
	if code, _, _ := c.do("PUT", "/inventory/managedObjects/"+kid, vnd("managedObject"), `{"c8y_Position":{"lat":1,"lng":2,"alt":3}}`, false); code != 200 {
		t.Errorf("put position: %d", code)
	}
	if code, _, _ := c.do("PUT", "/inventory/managedObjects/"+kid, vnd("managedObject"), `{"c8y_Position":{"lat":"north"}}`, false); code != 422 {
		t.Errorf("put bad position: %d", code)
	}
	code, _, body = c.do("GET", "/inventory/managedObjects/"+kid, "", "", false)
	if pos, _ := body["c8y_Position"].(map[string]any); code != 200 || pos["alt"] != 3.0 {
		t.Errorf("get: %d %v", code, body)
	}
	if code, _, _ := c.do("GET", "/inventory/managedObjects/999999", "", "", false); code != 404 {
		t.Errorf("get unknown: %d", code)
	}
}

func TestRESTMediaTypes(t *testing.T) {
	s := start(t)
	c := restClient(t, s)
	for _, media := range []string{"", "text/plain", vnd("event"), "application/xml"} {
		code, _, body := c.do("POST", "/inventory/managedObjects", media, `{"name":"n"}`, false)
		if code != 415 {
			t.Errorf("media %q: %d %v", media, code, body)
		}
	}
	for _, media := range []string{"application/json", strings.ToUpper(vnd("managedObject")), "application/vnd.com.nsn.cumulocity.managedObject+json"} {
		if code, _, _ := c.do("POST", "/inventory/managedObjects", media, `{"name":"n"}`, false); code != 201 {
			t.Errorf("media %q: %d", media, code)
		}
	}
}

func TestRESTMeasurementValidation(t *testing.T) {
	s := start(t)
	c := restClient(t, s)
	src := c.device("d1")
	ok := func(extra string) string {
		return fmt.Sprintf(`{"source":{"id":%q},"type":"t","time":"2024-01-01T00:00:00.000Z"%s}`, src, extra)
	}
	cases := map[string]struct {
		body string
		want string // substring of the 422 message; "" = 201
	}{
		"Valid":          {ok(`,"c8y_T":{"T":{"value":1.5,"unit":"C"}},"note":"x"`), ""},
		"NoSeries":       {ok(""), ""},
		"Missing":        {`{"c8y_T":{"T":{"value":1}}}`, "Following mandatory fields should be included: source,type,time"},
		"NoOffset":       {strings.Replace(ok(""), ".000Z", "", 1), "no zone offset"},
		"UnknownSource":  {strings.Replace(ok(""), src, "424242", 1), "Source with id 424242 not found"},
		"StringValue":    {ok(`,"c8y_T":{"T":{"value":"1.5"}}`), "value is missing or not a number"},
		"NoValue":        {ok(`,"c8y_T":{"T":{"unit":"C"}}`), "value is missing or not a number"},
		"SeriesNotObj":   {ok(`,"c8y_T":{"T":1}`), "not a series object"},
		"BadFragment":    {ok(`,"c8y.T":{"T":{"value":1}}`), `illegal fragment name "c8y.T"`},
		"BadSeries":      {ok(`,"c8y_T":{"a b":{"value":1}}`), `illegal series name "a b"`},
		"HugeValue":      {ok(`,"c8y_T":{"T":{"value":1e999}}`), "NUMBER"},
		"NotJSON":        {`{`, "Could not read"},
		"EmptyTypeEmpty": {strings.Replace(ok(""), `"type":"t"`, `"type":""`, 1), "mandatory fields should be included: type"},
	}
	for name, tc := range cases {
		code, _, body := c.do("POST", "/measurement/measurements", vnd("measurement"), tc.body, false)
		switch {
		case tc.want == "" && code != 201:
			t.Errorf("%s: %d %v", name, code, body)
		case tc.want != "" && (code != 422 || body["error"] != "undefined/validationError" || !strings.Contains(body["message"].(string), tc.want)):
			t.Errorf("%s: %d %v, want 422 with %q", name, code, body, tc.want)
		}
	}
	if n := len(s.Measurements()); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
	// a collection is all or nothing
	coll := fmt.Sprintf(`{"measurements":[%s,%s]}`, ok(`,"c8y_T":{"T":{"value":2}}`), ok(`,"c8y_T":{"T":{"value":"x"}}`))
	if code, _, body := c.do("POST", "/measurement/measurements", vnd("measurementCollection"), coll, false); code != 422 || !strings.Contains(body["message"].(string), "measurements[1]") {
		t.Errorf("bad collection: %d %v", code, body)
	}
	coll = fmt.Sprintf(`{"measurements":[%s,%s]}`, ok(`,"c8y_T":{"T":{"value":2}}`), ok(`,"c8y_T":{"T":{"value":2}}`))
	if code, _, _ := c.do("POST", "/measurement/measurements", vnd("measurementCollection"), coll, false); code != 201 {
		t.Errorf("collection: %d", code)
	}
	// a collection sent as a single measurement lacks the mandatory fields
	if code, _, _ := c.do("POST", "/measurement/measurements", vnd("measurement"), coll, false); code != 422 {
		t.Errorf("collection as measurement: %d", code)
	}
	if n := len(s.Measurements()); n != 4 { // duplicates kept
		t.Errorf("%d stored, want 4", n)
	}
}

func TestRESTEventsAndAlarms(t *testing.T) {
	s := start(t)
	c := restClient(t, s)
	src := c.device("d1")
	ev := fmt.Sprintf(`{"source":{"id":%q},"type":"c8y_LocationUpdate","text":"moved","time":"2024-01-01T00:00:00Z","c8y_Position":{"lat":1.5,"lng":2.5}}`, src)
	if code, _, _ := c.do("POST", "/event/events", vnd("event"), ev, false); code != 201 {
		t.Errorf("event: %d", code)
	}
	if code, _, body := c.do("POST", "/event/events", vnd("event"), strings.Replace(ev, `"text":"moved",`, "", 1), false); code != 422 ||
		!strings.Contains(body["message"].(string), "text") {
		t.Errorf("event without text: %d %v", code, body)
	}
	if e := s.Events(); len(e) != 1 || e[0].Position == nil || e[0].Position.Lng != 2.5 {
		t.Errorf("events %+v", e)
	}
	al := fmt.Sprintf(`{"source":{"id":%q},"type":"a","text":"x","time":"2024-01-01T00:00:00Z","severity":"MAJOR"}`, src)
	for range 3 {
		if code, _, _ := c.do("POST", "/alarm/alarms", vnd("alarm"), al, false); code != 201 {
			t.Errorf("alarm: %d", code)
		}
	}
	if code, _, _ := c.do("POST", "/alarm/alarms", vnd("alarm"), strings.Replace(al, "MAJOR", "BAD", 1), false); code != 422 {
		t.Errorf("alarm with bad severity: %d", code)
	}
	if a := s.Alarms(); len(a) != 1 || a[0].Count != 3 {
		t.Errorf("alarms %+v", a)
	}
}

func TestRESTFaults(t *testing.T) {
	s := start(t)
	c := restClient(t, s)
	src := c.device("d1")
	m := fmt.Sprintf(`{"source":{"id":%q},"type":"t","time":"2024-01-01T00:00:00Z","f":{"s":{"value":1}}}`, src)
	post := func() (int, http.Header) {
		code, hdr, _ := c.do("POST", "/measurement/measurements", vnd("measurement"), m, false)
		return code, hdr
	}
	s.InjectHTTP(HTTPFault{Status: 429, RetryAfter: "7", Skip: 1, PathPrefix: "/measurement"}, 2)
	var codes []int
	for range 4 {
		code, hdr := post()
		codes = append(codes, code)
		if code == 429 && hdr.Get("Retry-After") != "7" {
			t.Errorf("Retry-After %q", hdr.Get("Retry-After"))
		}
	}
	if fmt.Sprint(codes) != "[201 429 429 201]" {
		t.Errorf("codes %v", codes)
	}
	s.InjectHTTP(HTTPFault{Status: 503, BodyContains: `"value":2`}, -1)
	if code, _ := post(); code != 201 {
		t.Errorf("non-matching body: %d", code)
	}
	s.ClearFaults()

	// reset after store: the client sees a broken connection, the data is there
	before := len(s.Measurements())
	s.InjectHTTP(HTTPFault{ResetAfterStore: true}, 1)
	req, _ := http.NewRequest("POST", s.URL()+"/measurement/measurements", strings.NewReader(m))
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", vnd("measurement"))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("reset-after-store answered %d", resp.StatusCode)
	}
	if n := len(s.Measurements()); n != before+1 {
		t.Errorf("reset-after-store stored %d", n-before)
	}

	// slow reply
	s.InjectHTTP(HTTPFault{Delay: 200 * time.Millisecond}, 1)
	start := time.Now()
	if code, _ := post(); code != 201 || time.Since(start) < 150*time.Millisecond {
		t.Errorf("slow reply: %d after %v", code, time.Since(start))
	}
	if f := s.FaultsFired(); f["http:Too Many Requests"] != 2 || f["http:reset"] != 1 || f["http:delay"] != 1 {
		t.Errorf("fired %v", f)
	}
}
