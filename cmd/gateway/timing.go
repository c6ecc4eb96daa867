package main

import (
	"cmp"
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
	// statusRefresh is how often the status page polls, statusSampleEvery
	// its history's resolution. 0: the status package's defaults (it fills
	// them itself).
	statusRefresh, statusSampleEvery time.Duration
}

// withDefaults fills the zero fields with the product's values.
func (t timing) withDefaults() timing {
	// 0 or below takes the default (max(v, 0) makes it 0 for cmp.Or).
	t.forwarderAttempt = cmp.Or(max(t.forwarderAttempt, 0), 10*time.Second)
	t.webhookHeaderTimeout = cmp.Or(max(t.webhookHeaderTimeout, 0), 10*time.Second)
	t.devicesSaveEvery = cmp.Or(max(t.devicesSaveEvery, 0), 30*time.Second)
	t.wittraNewProjectPoll = cmp.Or(max(t.wittraNewProjectPoll, 0), wittraapi.DefaultNewProjectPoll)
	return t
}
