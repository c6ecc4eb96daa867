package main

import "time"

// timing holds delays the product fixes (not in YAML) and tests shorten; a
// RunCommand carries its own, so one test's values never leak into another.
type timing struct {
	// forwarderAttempt bounds one delivery attempt; between attempts the
	// forwarder drops what expired meanwhile. 0: 10 s.
	forwarderAttempt time.Duration
	// webhookHeaderTimeout is how long a client may take to send its
	// request headers. 0: 10 s.
	webhookHeaderTimeout time.Duration
}

// withDefaults fills the zero fields with the product's values.
func (t timing) withDefaults() timing {
	if t.forwarderAttempt <= 0 {
		t.forwarderAttempt = 10 * time.Second
	}
	if t.webhookHeaderTimeout <= 0 {
		t.webhookHeaderTimeout = 10 * time.Second
	}
	return t
}
