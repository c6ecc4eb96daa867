package c8yfake

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"time"
)

// What the fake stores. Every stored item carries Seq, one counter shared by
// all of them, so tests can check the order things happened in across kinds
// (device registered before its first measurement, and so on).

// ManagedObject is an inventory object (a device or child device).
type ManagedObject struct {
	Seq       uint64
	ID        string
	Name      string
	Type      string
	IsDevice  bool
	Owner     string   // user that created it
	Parents   []string // ids of the devices it is a child of
	Children  []string // child device ids, in link order
	Position  *Position
	Fragments map[string]json.RawMessage // other fragments as last written
}

// Position is a c8y_Position fragment.
type Position struct {
	Lat, Lng      float64
	Alt, Accuracy *float64 // nil when not given
}

// ExternalID binds an external id to a managed object.
type ExternalID struct {
	Seq           uint64
	Type          string // c8y_Serial for everything the sink creates
	Value         string
	ManagedObject string
}

// ChildLink is one childDevices reference.
type ChildLink struct {
	Seq           uint64
	Parent, Child string
	Via           string
}

// Series is one measured value.
type Series struct {
	Value float64
	Text  string // the value as sent
	Unit  string
}

// Measurement is one stored measurement.
type Measurement struct {
	Seq       uint64
	ID        string
	Source    string // managed object id
	Type      string
	Time      time.Time
	TimeText  string // as sent ("" when the server chose the time)
	Fragments map[string]map[string]Series
	Via       string // "mqtt <template>" or "rest"
}

// Event is one stored event.
type Event struct {
	Seq      uint64
	ID       string
	Source   string
	Type     string
	Text     string
	Time     time.Time
	TimeText string
	Position *Position // c8y_Position, for location updates
	Via      string
}

// Alarm is one stored alarm. A new alarm with the source and type of an
// ACTIVE one is merged into it: Count goes up, nothing new is stored.
type Alarm struct {
	Seq       uint64
	ID        string
	Source    string
	Type      string
	Text      string
	Severity  string // CRITICAL MAJOR MINOR WARNING
	Status    string // ACTIVE CLEARED
	Count     int
	FirstTime time.Time
	Time      time.Time
	Via       string
}

// ErrorMessage is an error the fake reported: a line sent (or due) on s/e,
// an MQTT disconnect it caused, or a REST error reply.
type ErrorMessage struct {
	Seq     uint64
	Channel string // "s/e", "mqtt" (connection-level) or "rest"
	Client  string // MQTT device identifier or REST user
	Text    string // the s/e line, or "<status> <error JSON>"
}

// Publish is one device publish the fake received (whatever became of it).
type Publish struct {
	Seq     uint64
	Client  string // device identifier
	Topic   string
	Packet  int // size of the whole PUBLISH packet in bytes
	Lines   int // SmartREST lines parsed
	Payload string
}

// Registration is one step of device registration as the fake saw it, in
// arrival order. Op is one of:
//
//	MQTT: "100", "101" (each line received), "auto-device", "auto-child"
//	      (created implicitly by data), "update" (JSON inventory update)
//	REST: "lookup" (GET identity), "create" (POST managedObjects),
//	      "bind" (POST externalIds), "link" (POST childDevices)
type Registration struct {
	Seq        uint64
	Via        string // "mqtt" or "rest"
	Op         string
	ExternalID string
	ID         string // managed object id concerned ("" when none)
	Parent     string // parent managed object id (101, link, auto-child)
	Created    bool   // a managed object was created by this step
	Status     int    // REST status code; 0 for MQTT
}

// errConflict and errNotFound are store-level failures that handlers map
// to protocol errors.
var (
	errConflict = errors.New("conflict")
	errNotFound = errors.New("not found")
)

// store holds everything; the Server's mutex guards it.
type store struct {
	seq    uint64
	nextID int

	mos          map[string]*ManagedObject
	ext          map[extKey]string // → managed object id
	extOrder     []ExternalID
	links        []ChildLink
	measurements []Measurement
	events       []Event
	alarms       []*Alarm
	errors       []ErrorMessage
	regs         []Registration
	publishes    []Publish
}

type extKey struct{ typ, value string }

func newStore() *store {
	return &store{nextID: 1000, mos: map[string]*ManagedObject{}, ext: map[extKey]string{}}
}

func (st *store) next() uint64 {
	st.seq++
	return st.seq
}

func (st *store) newID() string {
	st.nextID++
	return strconv.Itoa(st.nextID)
}

func (st *store) createMO(name, typ, owner string, isDevice bool, frags map[string]json.RawMessage) *ManagedObject {
	mo := &ManagedObject{Seq: st.next(), ID: st.newID(), Name: name, Type: typ, Owner: owner, IsDevice: isDevice, Fragments: frags}
	if mo.Fragments == nil {
		mo.Fragments = map[string]json.RawMessage{}
	}
	st.mos[mo.ID] = mo
	return mo
}

func (st *store) lookupExt(typ, value string) (string, bool) {
	id, ok := st.ext[extKey{typ, value}]
	return id, ok
}

// bindExt binds (typ, value) to id: errNotFound for an unknown id,
// errConflict when the external id is already bound.
func (st *store) bindExt(typ, value, id string) error {
	if _, ok := st.mos[id]; !ok {
		return errNotFound
	}
	k := extKey{typ, value}
	if _, ok := st.ext[k]; ok {
		return errConflict
	}
	st.ext[k] = id
	st.extOrder = append(st.extOrder, ExternalID{Seq: st.next(), Type: typ, Value: value, ManagedObject: id})
	return nil
}

// link makes child a child device of parent; linking twice is a no-op.
func (st *store) link(parent, child, via string) error {
	p, ok := st.mos[parent]
	c, ok2 := st.mos[child]
	if !ok || !ok2 {
		return errNotFound
	}
	if slices.Contains(p.Children, child) {
		return nil
	}
	p.Children = append(p.Children, child)
	c.Parents = append(c.Parents, parent)
	st.links = append(st.links, ChildLink{Seq: st.next(), Parent: parent, Child: child, Via: via})
	return nil
}

// ownedBy reports whether user may write data for mo: it created mo or
// one of mo's ancestors.
func (st *store) ownedBy(mo *ManagedObject, user string) bool {
	seen := map[string]bool{}
	var walk func(m *ManagedObject) bool
	walk = func(m *ManagedObject) bool {
		if m == nil || seen[m.ID] {
			return false
		}
		seen[m.ID] = true
		if m.Owner == user {
			return true
		}
		for _, p := range m.Parents {
			if walk(st.mos[p]) {
				return true
			}
		}
		return false
	}
	return walk(mo)
}

func (st *store) addMeasurement(m Measurement) {
	m.Seq = st.next()
	m.ID = st.newID()
	st.measurements = append(st.measurements, m)
}

func (st *store) addEvent(e Event) Event {
	e.Seq = st.next()
	e.ID = st.newID()
	st.events = append(st.events, e)
	return e
}

// raiseAlarm stores a new alarm or merges it into the ACTIVE one of the
// same source and type.
func (st *store) raiseAlarm(a Alarm) *Alarm {
	for _, old := range st.alarms {
		if old.Source == a.Source && old.Type == a.Type && old.Status == "ACTIVE" {
			old.Count++
			old.Time = a.Time
			return old
		}
	}
	a.Seq = st.next()
	a.ID = st.newID()
	a.Status = "ACTIVE"
	a.Count = 1
	a.FirstTime = a.Time
	st.alarms = append(st.alarms, &a)
	return &a
}

func (st *store) activeAlarm(source, typ string) *Alarm {
	for _, a := range st.alarms {
		if a.Source == source && a.Type == typ && a.Status == "ACTIVE" {
			return a
		}
	}
	return nil
}

func (st *store) addError(channel, client, text string) {
	st.errors = append(st.errors, ErrorMessage{Seq: st.next(), Channel: channel, Client: client, Text: text})
}

// deleteMO removes a managed object, its external ids and its links.
func (st *store) deleteMO(id string) bool {
	mo, ok := st.mos[id]
	if !ok {
		return false
	}
	delete(st.mos, id)
	for k, v := range st.ext {
		if v == id {
			delete(st.ext, k)
		}
	}
	for _, p := range mo.Parents {
		if pm := st.mos[p]; pm != nil {
			pm.Children = slices.DeleteFunc(pm.Children, func(c string) bool { return c == id })
		}
	}
	for _, c := range mo.Children {
		if cm := st.mos[c]; cm != nil {
			cm.Parents = slices.DeleteFunc(cm.Parents, func(p string) bool { return p == id })
		}
	}
	return true
}

func (st *store) addReg(r Registration) {
	r.Seq = st.next()
	st.regs = append(st.regs, r)
}

// Copies for the inspection API: callers get data they own.

func (m ManagedObject) clone() ManagedObject {
	m.Parents = slices.Clone(m.Parents)
	m.Children = slices.Clone(m.Children)
	m.Fragments = maps.Clone(m.Fragments)
	if m.Position != nil {
		p := *m.Position
		m.Position = &p
	}
	return m
}

func (m Measurement) clone() Measurement {
	frags := make(map[string]map[string]Series, len(m.Fragments))
	for k, v := range m.Fragments {
		frags[k] = maps.Clone(v)
	}
	m.Fragments = frags
	return m
}

func (e Event) clone() Event {
	if e.Position != nil {
		p := *e.Position
		e.Position = &p
	}
	return e
}
