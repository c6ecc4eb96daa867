package main

import "testing"

func TestSubscriberSinkConfig(t *testing.T) {
	cfg := mustParse(t, yml(
		"gateway: {id: gw1}",
		"broker:",
		"  users: [{username: historian, password: pw}]",
		"sinks:",
		"  - {name: local, type: broker}",
		"  - {name: historian, type: subscriber, client_id: hist-1, username: historian, topic_prefix: wittra, values: true, qos: 2}",
	), t.TempDir())
	s := cfg.Sinks[1]
	if s.Type != "subscriber" || s.ClientID != "hist-1" || s.Username != "historian" || s.QoS != 2 || !s.Values {
		t.Fatalf("subscriber sink = %+v", s)
	}
	bc := brokerConfig(cfg)
	if len(bc.Subscribers) != 1 || bc.Subscribers[0].ClientID != "hist-1" || bc.Subscribers[0].GatewayID != "gw1" {
		t.Fatalf("broker config subscribers = %+v", bc.Subscribers)
	}

	// Without users, no username is needed; qos defaults to 1.
	cfg = mustParse(t, yml("sinks: [{name: h, type: subscriber, client_id: h}]"), t.TempDir())
	if cfg.Sinks[0].QoS != 1 {
		t.Fatalf("default qos = %d", cfg.Sinks[0].QoS)
	}
}

func TestSubscriberSinkConfigErrors(t *testing.T) {
	wantProblems(t, []problemCase{
		{"ClientIDRequired", "sinks: [{name: h, type: subscriber}]\n", []string{"sinks[0].client_id", "required"}},
		{"ClientIDUnique", "sinks: [{name: a, type: subscriber, client_id: h}, {name: b, type: subscriber, client_id: h}]\n", []string{"sinks[1].client_id", "same client_id as sinks[0]"}},
		{"NotGatewayID", "gateway: {id: gw1}\nsinks: [{name: h, type: subscriber, client_id: gw1}]\n", []string{"sinks[0].client_id", "gateway's own id"}},
		{"RetainRefused", "sinks: [{name: h, type: subscriber, client_id: h, retain: true}]\n", []string{"sinks[0].retain", "not for type subscriber"}},
		{"QoS0", "sinks: [{name: h, type: subscriber, client_id: h, qos: 0}]\n", []string{"sinks[0].qos", "1 or 2"}},
		{"UsernameRequired", "broker: {users: [{username: u, password: p}]}\nsinks: [{name: h, type: subscriber, client_id: h}]\n", []string{"sinks[0].username", "required"}},
		{"UsernameUnknown", "broker: {users: [{username: u, password: p}]}\nsinks: [{name: h, type: subscriber, client_id: h, username: x}]\n", []string{"sinks[0].username", `"x" is not one of broker.users`}},
		{"BrokerDisabled", "broker: {enabled: false}\nsinks: [{name: h, type: subscriber, client_id: h}]\n", []string{"sinks[0].type", "broker.enabled"}},
	})
}
