package c8yfake

import (
	"slices"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const wait = 5 * time.Second

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// device is a test MQTT client subscribed to s/e and s/ds.
type device struct {
	c       paho.Client
	errors  chan string
	replies chan string
}

func connectOpts(s *Server, clientID, login, password string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(s.MQTTURL()).SetClientID(clientID).
		SetUsername(login).SetPassword(password).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(wait).SetOrderMatters(false).
		SetProtocolVersion(4) // else paho retries a refused connect as 3.1
}

func connect(t *testing.T, s *Server, clientID string) *device {
	t.Helper()
	d := &device{errors: make(chan string, 100), replies: make(chan string, 100)}
	d.c = paho.NewClient(connectOpts(s, clientID, s.Tenant()+"/"+DefaultUser, DefaultPassword))
	if tok := d.c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	for topic, ch := range map[string]chan string{"s/e": d.errors, "s/ds": d.replies} {
		tok := d.c.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) { ch <- string(m.Payload()) })
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", topic, tok.Error())
		}
	}
	return d
}

// pub publishes at QoS 1 and waits for the PUBACK.
func (d *device) pub(t *testing.T, topic, payload string) {
	t.Helper()
	tok := d.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %q: %v", payload, tok.Error())
	}
}

// expect reads the next message of ch.
func expect(t *testing.T, ch chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	case <-time.After(wait):
		t.Errorf("no %q", want)
	}
}

func none(t *testing.T, ch chan string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Errorf("unexpected %q", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestConnackCodes(t *testing.T) {
	s := start(t)
	cases := []struct {
		name, clientID, login, password string
		refuse                          byte
		want                            byte
	}{
		{"OK", "gw1", s.Tenant() + "/" + DefaultUser, DefaultPassword, 0, 0},
		{"ConnectionTypePrefix", "d:gw1:tpl", s.Tenant() + "/" + DefaultUser, DefaultPassword, 0, 0},
		{"BadPassword", "gw1", s.Tenant() + "/" + DefaultUser, "nope", 0, 4},
		{"NoTenant", "gw1", DefaultUser, DefaultPassword, 0, 4},
		{"WrongTenant", "gw1", "t9/" + DefaultUser, DefaultPassword, 0, 4},
		{"EmptyIdentifier", "d:", s.Tenant() + "/" + DefaultUser, DefaultPassword, 0, 2},
		{"Unavailable", "gw1", s.Tenant() + "/" + DefaultUser, DefaultPassword, 3, 3},
		{"NotAuthorized", "gw1", s.Tenant() + "/" + DefaultUser, DefaultPassword, 5, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.refuse != 0 {
				s.RefuseConnects(tc.refuse, 1)
			}
			c := paho.NewClient(connectOpts(s, tc.clientID, tc.login, tc.password))
			tok := c.Connect()
			if !tok.WaitTimeout(wait) {
				t.Fatal("connect timed out")
			}
			if got := tok.(*paho.ConnectToken).ReturnCode(); got != tc.want {
				t.Errorf("CONNACK %d, want %d (%v)", got, tc.want, tok.Error())
			}
			c.Disconnect(0)
		})
	}
}

func TestSubscribeRestricted(t *testing.T) {
	s := start(t)
	d := connect(t, s, "gw1")
	for filter, allowed := range map[string]bool{"s/us": false, "s/us/#": false, "#": false, "s/+": false, "t/us": false, "s/e": true, "s/ds": true, "error": true, "s/dc/x": true} {
		tok := d.c.Subscribe(filter, 0, nil)
		if !tok.WaitTimeout(wait) {
			t.Fatal("subscribe timed out")
		}
		got := tok.(*paho.SubscribeToken).Result()[filter]
		if (got != 0x80) != allowed {
			t.Errorf("subscribe %s: granted 0x%02x, allowed %v", filter, got, allowed)
		}
	}
}

func TestSmartRESTTemplates(t *testing.T) {
	s := start(t)
	d := connect(t, s, "gw1")

	d.pub(t, "s/us", "100,My gateway,my_Type\n100")
	expect(t, d.errors, "41,100,Device already existing")
	gw, ok := s.DeviceBySerial("gw1")
	if !ok || gw.Name != "My gateway" || gw.Type != "my_Type" || !gw.IsDevice {
		t.Fatalf("gateway %+v", gw)
	}

	d.pub(t, "s/us", `101,child1,"Child, one",c_Type`+"\n101,child1\n101,child2")
	d.pub(t, "s/us", "105")
	expect(t, d.replies, "106,child1,child2")
	d.pub(t, "s/us", "123")
	expect(t, d.replies, "124,"+gw.ID)
	c1, _ := s.DeviceBySerial("child1")
	if c1.Name != "Child, one" || c1.Type != "c_Type" || len(c1.Parents) != 1 || c1.Parents[0] != gw.ID {
		t.Errorf("child1 %+v", c1)
	}

	d.pub(t, "s/us/child1", strings.Join([]string{
		"211,21.5,2024-01-01T00:00:00Z",
		"212,80",
		"200,c8y_H,h,40.5,%RH,2024-01-01T00:00:00.000+01:00",
		"201,multi,2024-01-01T00:00:00Z,f1,a,1,u1,f1,b,2,,f2,c,3",
		"210,-70,",
		"402,59.1,18.2,,0.8,2024-01-01T00:00:00Z",
		`400,my_Event,"text, with ""quotes""",2024-01-01T00:00:00Z`,
	}, "\n"))
	none(t, d.errors)
	ms := s.Measurements()
	if len(ms) != 5 {
		t.Fatalf("%d measurements, want 5: %+v", len(ms), ms)
	}
	if m := ms[0]; m.Type != "c8y_TemperatureMeasurement" || m.Fragments["c8y_TemperatureMeasurement"]["T"] != (Series{21.5, "21.5", "C"}) || m.Source != c1.ID {
		t.Errorf("211 → %+v", m)
	}
	if m := ms[1]; m.Fragments["c8y_Battery"]["level"].Unit != "%" || m.TimeText != "" {
		t.Errorf("212 → %+v", m)
	}
	if m := ms[3]; m.Type != "multi" || len(m.Fragments["f1"]) != 2 || m.Fragments["f1"]["b"].Unit != "" || m.Fragments["f2"]["c"].Value != 3 {
		t.Errorf("201 → %+v", m)
	}
	if m := ms[4]; m.Fragments["c8y_SignalStrength"]["rssi"].Value != -70 {
		t.Errorf("210 → %+v", m)
	}
	ev := s.Events()
	if len(ev) != 2 || ev[0].Type != "c8y_LocationUpdate" || ev[0].Position.Alt != nil || *ev[0].Position.Accuracy != 0.8 ||
		ev[1].Text != `text, with "quotes"` {
		t.Errorf("events %+v", ev)
	}
	if c1, _ = s.DeviceBySerial("child1"); c1.Position == nil || c1.Position.Lat != 59.1 {
		t.Errorf("402 did not set the device position: %+v", c1.Position)
	}

	// alarms merge while active
	d.pub(t, "s/us", "301,a_Type,first\n301,a_Type,second\n304,b_Type")
	d.pub(t, "s/us", "306,a_Type\n302,a_Type")
	al := s.Alarms()
	if len(al) != 3 || al[0].Count != 2 || al[0].Status != "CLEARED" || al[1].Text != "Alarm of type b_Type raised" ||
		al[2].Severity != "MAJOR" || al[2].Status != "ACTIVE" {
		t.Errorf("alarms %+v", al)
	}

	// inventory templates
	d.pub(t, "s/us", "110,SN1,model,rev\n114,c8y_Restart,c8y_Firmware\n117,60\n117,5\n125")
	gw, _ = s.DeviceBySerial("gw1")
	for frag, want := range map[string]string{
		"c8y_Hardware":             `{"model":"model","revision":"rev","serialNumber":"SN1"}`,
		"c8y_SupportedOperations":  `["c8y_Restart","c8y_Firmware"]`,
		"c8y_RequiredAvailability": `{"responseInterval":60}`,
	} {
		if got := string(gw.Fragments[frag]); got != want {
			t.Errorf("%s = %s, want %s", frag, got, want)
		}
	}

	// errors
	for line, want := range map[string]string{
		"999,x":                          "43,999,Unknown template identifier",
		"211,abc":                        "45,211,Value is not a NUMBER: abc",
		"211":                            "45,211,Mandatory field temperature is missing",
		"211,1,2024-01-01T00:00:00":      `45,211,"time has no zone offset: ""2024-01-01T00:00:00"""`,
		"211,1,2024-01-01T00:00:00Z,x":   "45,211,Wrong number of arguments",
		"201,t,,f,s":                     "45,201,Wrong number of arguments",
		"201,t,,f.x,s,1,u":               `45,201,"illegal fragment name ""f.x"""`,
		"400,t":                          "45,400,Mandatory field text is missing",
		"401,,1":                         "45,401,Mandatory field latitude is missing",
		`400,"t"x,y`:                     "42,400,line 1: text after the closing quote of a field",
		"100,again":                      "41,100,Device already existing",
		"101":                            "45,101,Mandatory field child id is missing",
		"301":                            "45,301,Mandatory field type is missing",
		"305,a_Type,HUGE":                "45,305,Invalid severity HUGE",
		"101,c3,n,t,maybe":               "45,101,Value is not a BOOLEAN: maybe",
		"210,,":                          "45,210,Mandatory field rssi or ber is missing",
		"200,c8y_H,h,4x,%RH":             "45,200,Value is not a NUMBER: 4x",
		"201,t,2024-01-01T00:00:00Z,f,s": "45,201,Wrong number of arguments",
	} {
		d.pub(t, "s/us", line)
		expect(t, d.errors, want)
	}
	if n := len(s.Measurements()); n != 5 {
		t.Errorf("%d measurements after bad lines, want still 5", n)
	}
}

func TestDataAutoCreatesDevices(t *testing.T) {
	s := start(t)
	d := connect(t, s, "gw2")
	d.pub(t, "s/us/kid", "211,1")
	gw, ok1 := s.DeviceBySerial("gw2")
	kid, ok2 := s.DeviceBySerial("kid")
	if !ok1 || !ok2 || gw.Name != "MQTT Device gw2" || kid.Type != "c8y_MQTTChildDevice" || kid.Parents[0] != gw.ID {
		t.Fatalf("gw %+v kid %+v", gw, kid)
	}
	var ops []string
	for _, r := range s.Registrations() {
		ops = append(ops, r.Op)
	}
	if strings.Join(ops, ",") != "auto-device,auto-child" {
		t.Errorf("registrations %v", ops)
	}
}

// A packet of exactly the limit is accepted; one byte more disconnects.
func TestPacketSizeLimit(t *testing.T) {
	s := start(t)
	d := connect(t, s, "gw3")
	const topic = "s/us"
	head := "400,big,"
	fill := func(total int) string {
		// PUBLISH QoS 1: 1 + 2 (varint) + 2 + len(topic) + 2 + payload
		return head + strings.Repeat("x", total-(1+2+2+len(topic)+2)-len(head))
	}
	d.pub(t, topic, fill(DefaultMaxPacketSize))
	if ev := s.Events(); len(ev) != 1 || len(ev[0].Text) < 16000 {
		t.Fatalf("exact-size publish not stored: %d events", len(ev))
	}
	if p := s.Publishes(); p[len(p)-1].Packet != DefaultMaxPacketSize {
		t.Errorf("recorded packet size %d", p[len(p)-1].Packet)
	}
	tok := d.c.Publish(topic, 1, false, fill(DefaultMaxPacketSize+1))
	tok.WaitTimeout(time.Second)
	testutil.Poll(wait, func() bool { return !d.c.IsConnectionOpen() }) // checked below
	if d.c.IsConnectionOpen() {
		t.Error("oversized publish did not disconnect the client")
	}
	if n := len(s.Events()); n != 1 {
		t.Errorf("%d events, oversized one stored?", n)
	}
	// the server records the disconnect right after closing the socket
	recorded := func() bool {
		return slices.ContainsFunc(s.Errors(), func(e ErrorMessage) bool { return strings.Contains(e.Text, "packet larger than 16184") })
	}
	if !testutil.Poll(wait, recorded) {
		t.Fatalf("disconnect not recorded: %+v", s.Errors())
	}
}

func TestOneConnectionPerIdentifier(t *testing.T) {
	s := start(t)
	a := connect(t, s, "gw4")
	connect(t, s, "d:gw4")
	testutil.Poll(wait, func() bool { return !a.c.IsConnectionOpen() }) // checked below
	if a.c.IsConnectionOpen() {
		t.Error("first connection of gw4 still open")
	}
	if got := s.Connected(); len(got) != 1 || got[0] != "gw4" {
		t.Errorf("connected %v", got)
	}
}

func TestPublishFaults(t *testing.T) {
	s := start(t)
	d := connect(t, s, "gw5")
	d.pub(t, "s/us", "100")

	s.InjectMQTT(MQTTFault{Mode: DropPublish}, 1)
	if tok := d.c.Publish("s/us", 1, false, "211,1"); tok.WaitTimeout(300 * time.Millisecond) {
		t.Errorf("PUBACK for a dropped publish")
	}
	s.InjectMQTT(MQTTFault{Mode: StoreNoPuback}, 1)
	if tok := d.c.Publish("s/us", 1, false, "211,2"); tok.WaitTimeout(300 * time.Millisecond) {
		t.Errorf("PUBACK withheld expected")
	}
	s.InjectMQTT(MQTTFault{Mode: PubackNoStore}, 1)
	d.pub(t, "s/us", "211,3")
	s.InjectMQTT(MQTTFault{Delay: 200 * time.Millisecond, Skip: 1}, 1)
	d.pub(t, "s/us", "211,4")
	start := time.Now()
	d.pub(t, "s/us", "211,5")
	if time.Since(start) < 150*time.Millisecond {
		t.Errorf("delayed PUBACK came after %v", time.Since(start))
	}
	var got []string
	for _, m := range s.Measurements() {
		got = append(got, m.Fragments["c8y_TemperatureMeasurement"]["T"].Text)
	}
	if strings.Join(got, ",") != "2,4,5" {
		t.Errorf("stored %v, want 2,4,5", got)
	}
	s.InjectMQTT(MQTTFault{Mode: StoreAndDisconnect}, 1)
	d.c.Publish("s/us", 1, false, "211,6")
	testutil.Poll(wait, func() bool { return !d.c.IsConnectionOpen() }) // checked below
	if d.c.IsConnectionOpen() || len(s.Measurements()) != 4 {
		t.Errorf("store-and-disconnect: open %v, %d measurements", d.c.IsConnectionOpen(), len(s.Measurements()))
	}
}
