package main

import (
	"time"

	"wittra-gateway/wittraapi"
)

// timing holds delays the product fixes (not in YAML) and tests shorten; a
// RunCommand carries its own, so one test's values never leak into another.
type timing struct {
	// forwarderAttempt bounds one delivery attempt; between attempts the
	// forwarder drops what expired meanwhile. 0: 10 s.
	forwarderAttempt time.Duration
	// webhookHeaderTimeout is how long a client may take to send its
	// request headers. 0: 10 s.
	webhookHeaderTimeout time.Duration
	// devicesSaveEvery is how often the devices seen are written to the
	// queue file (a stop writes them too). 0: 30 s.
	devicesSaveEvery time.Duration
	// wittraNewProjectPoll is how soon a project first seen in a webhook
	// is asked about. 0: wittraapi.DefaultNewProjectPoll.
	wittraNewProjectPoll time.Duration
}

// withDefaults fills the zero fields with the product's values.
func (t timing) withDefaults() timing {
	if t.forwarderAttempt <= 0 {
		t.forwarderAttempt = 10 * time.Second
	}
	if t.webhookHeaderTimeout <= 0 {
		t.webhookHeaderTimeout = 10 * time.Second
	}
	if t.devicesSaveEvery <= 0 {
		t.devicesSaveEvery = 30 * time.Second
	}
	if t.wittraNewProjectPoll <= 0 {
		t.wittraNewProjectPoll = wittraapi.DefaultNewProjectPoll
	}
	return t
}
