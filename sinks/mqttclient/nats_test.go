//go:build unix

package mqttclient

import (
	"context"
	"testing"
	"time"

	"wittra-gateway/internal/natstest"
	"wittra-gateway/internal/testutil"
)

// TestNATSClusterNodeKilled runs the sink against the MQTT listener of a
// real 3-node NATS cluster (nats-server serves MQTT backed by JetStream,
// replicated over the cluster) and shuts down the node the sink is
// connected to in the middle of a stream, then restarts it. A persistent
// QoS 1 subscriber on another node must receive every message the sink
// reported delivered, in order per device but for those in flight at the
// loss.
func TestNATSClusterNodeKilled(t *testing.T) {
	began := time.Now()
	c, err := natstest.Start(natstest.Options{Nodes: 3, Dir: t.TempDir(), MQTT: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// NATS serves MQTT sessions from JetStream: a persistent subscriber
	// can connect only once JetStream answers on every node.
	if err := c.WaitJetStream(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster up in %v", time.Since(began).Round(time.Millisecond))

	sub := testutil.Subscribe(t, "tcp://"+c.MQTTAddr(2), DefaultTopicPrefix+"/"+testProject+"/+/data", 1,
		testutil.SubscriberOptions{Persistent: true, Reconnect: true, ClientID: "nats-subscriber"})
	s, _ := newSink(t, Config{URL: "tcp://" + c.MQTTAddr(0), QoS: 1, AckTimeout: 5 * time.Second})
	waitConnected(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	msgs := messages(3000, "D1", "D2", "D3", "D4")
	st := startStream(ctx, s, msgs, 100)
	for st.delivered() < len(msgs)/3 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%v: shutting down n0 (the sink's node; $MQTT_msgs leader n%d) after %d delivered",
		time.Since(began).Round(time.Millisecond), c.StreamLeader("$MQTT_msgs"), st.delivered())
	c.Shutdown(0)
	time.Sleep(2 * time.Second)
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: n0 restarted", time.Since(began).Round(time.Millisecond))
	// A node lost with publications in flight may have stored later ones
	// and not earlier ones (each is its own JetStream write): those come
	// again on the new connection, behind later ones. At most the window.
	checkStream(t, st, sub, msgs, DefaultWindow)
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}
