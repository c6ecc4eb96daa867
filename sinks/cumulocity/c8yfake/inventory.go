package c8yfake

import (
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// JSON via MQTT, inventory updates only: a publish on
// inventory/managedObjects/update/<id> with a JSON object body updates that
// managed object like PUT /inventory/managedObjects/<id> ("name" renames
// it; other members are fragments).
//
// Unverified, and chosen as thin-edge does it: <id> is the device's
// c8y_Serial external id (thin-edge's system tests against real tenants
// publish c8y/inventory/managedObjects/update/<serial>); Cumulocity's JSON
// via MQTT page names a managed object id there. The fake accepts both, the
// external id first. The object must belong to the connection's user (its
// device or one of its children); otherwise, or for a body that is not a
// JSON object, the update is refused and recorded in Errors on channel
// "error" (the real error topic's text is not reproduced). The PUBACK is
// sent either way.

const inventoryUpdatePrefix = "inventory/managedObjects/update/"

// inventoryTopic reports whether topic is a JSON inventory update and for
// which id.
func inventoryTopic(topic string) (id string, ok bool) {
	id, ok = strings.CutPrefix(topic, inventoryUpdatePrefix)
	return id, ok && id != "" && !strings.Contains(id, "/")
}

// handleInventory applies one inventory update (InventoryUpdates records it).
func (s *Server) handleInventory(cl *mqtt.Client, id string, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conns[cl.ID]
	if c == nil || c.cl != cl {
		return
	}
	refuse := func(format string, args ...any) {
		s.st.addError("error", c.serial, fmt.Sprintf("inventory update %s: ", id)+fmt.Sprintf(format, args...))
	}
	moID, found := s.st.lookupExt("c8y_Serial", id)
	if !found {
		moID = id
	}
	mo, ok := s.st.mos[moID]
	if !ok {
		refuse("no managed object with external id or id %q", id)
		return
	}
	if !s.st.ownedBy(mo, c.user) {
		refuse("not owned by %s", c.user)
		return
	}
	m, err := decodeObject(payload)
	if err != nil {
		refuse("body is not a JSON object: %v", err)
		return
	}
	upd := mo.clone()
	if res := applyFragments(&upd, m, payload); res != nil {
		refuse("%s", res.errMsg)
		return
	}
	*mo = upd
	s.st.addReg(Registration{Via: "mqtt", Op: "update", ID: mo.ID, ExternalID: id})
}
