// Package natstest runs a real NATS JetStream cluster in-process, on
// loopback, for the tests and benchmarks of the jetstream and mqtt sinks.
// It uses the nats-server module itself (no download, no external
// binary); the product never imports it.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"wittra-gateway/internal/freeport"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options shape a cluster.
type Options struct {
	Nodes int    // servers; 3 when zero
	Dir   string // parent of every node's JetStream store (node0, node1, ...); required
	MQTT  bool   // also serve MQTT (backed by JetStream) on every node
	// Name of the cluster; "wittra-test" when empty. A single node (Nodes
	// 1) runs without a cluster.
	Name string
	// NoAdvertise keeps the nodes from telling clients about each other,
	// so that a client only uses the URLs it was given (e.g. proxies).
	NoAdvertise bool
}

// Cluster is a running set of servers. Ports are fixed at start so that a
// node shut down can be restarted where its peers expect it.
type Cluster struct {
	opts  Options
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	opts *server.Options
	srv  *server.Server // nil while shut down
}

// Start starts opts.Nodes servers and waits until JetStream answers
// through every one of them (a meta leader is elected).
func Start(opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Name == "" {
		opts.Name = "wittra-test"
	}
	if opts.Dir == "" {
		return nil, errors.New("natstest: Dir is required")
	}
	per := 2
	if opts.MQTT {
		per = 3
	}
	ports, err := freeport.Ports(opts.Nodes * per)
	if err != nil {
		return nil, err
	}
	var routes []string
	for i := range opts.Nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i*per+1]))
	}
	c := &Cluster{opts: opts}
	for i := range opts.Nodes {
		so := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       ports[i*per],
			JetStream:  true,
			StoreDir:   filepath.Join(opts.Dir, fmt.Sprintf("node%d", i)),
			NoLog:      true,
			NoSigs:     true,
			// Small and quick: the tests shut nodes down on purpose.
			JetStreamMaxMemory: 64 << 20,
			JetStreamMaxStore:  1 << 30,
		}
		if opts.Nodes > 1 {
			so.Cluster = server.ClusterOpts{Name: opts.Name, Host: "127.0.0.1", Port: ports[i*per+1], NoAdvertise: opts.NoAdvertise}
			so.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		if opts.MQTT {
			so.MQTT = server.MQTTOpts{Host: "127.0.0.1", Port: ports[i*per+2]}
		}
		c.nodes = append(c.nodes, &node{opts: so})
	}
	var wg sync.WaitGroup
	errs := make([]error, opts.Nodes)
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.startNode(i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitJetStream(60 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startNode(i int) error {
	n := c.nodes[i]
	// A server's Options are consumed by NewServer: start from a copy.
	o := n.opts.Clone()
	s, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("natstest: node %d: %w", i, err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("natstest: node %d not ready for connections after 30 s", i)
	}
	c.mu.Lock()
	n.srv = s
	c.mu.Unlock()
	return nil
}

// WaitJetStream waits until every running node answers a JetStream
// account request.
func (c *Cluster) WaitJetStream(d time.Duration) error {
	deadline := time.Now().Add(d)
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		for {
			err := c.jsReady(c.ClientURL(i))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("natstest: JetStream not ready on node %d after %v: %w", i, d, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (c *Cluster) jsReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Nodes is the number of servers, running or not.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// ClientURL is node i's client URL (nats://127.0.0.1:port).
func (c *Cluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].opts.Port)
}

// ClientURLs lists every node's client URL.
func (c *Cluster) ClientURLs() []string {
	var out []string
	for i := range c.nodes {
		out = append(out, c.ClientURL(i))
	}
	return out
}

// MQTTAddr is node i's MQTT listener (host:port); "" without MQTT.
func (c *Cluster) MQTTAddr(i int) string {
	if !c.opts.MQTT {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", c.nodes[i].opts.MQTT.Port)
}

// Running reports whether node i is up.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv != nil
}

// Server returns node i's server, nil while it is shut down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Shutdown stops node i: its clients and routes are cut at once, its
// store stays on disk for a Restart.
func (c *Cluster) Shutdown(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again on its ports and store.
func (c *Cluster) Restart(i int) error {
	if c.Running(i) {
		return nil
	}
	return c.startNode(i)
}

// StreamLeader returns the index of the node leading stream name, or -1.
func (c *Cluster) StreamLeader(name string) int {
	for i := range c.nodes {
		s := c.Server(i)
		if s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, name) {
			return i
		}
	}
	return -1
}

// StreamCurrent reports whether node i runs and its replica of the stream
// is caught up with the stream's leader.
func (c *Cluster) StreamCurrent(i int, name string) bool {
	s := c.Server(i)
	return s != nil && s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, name)
}

// Close shuts every node down.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Shutdown(i)
		}()
	}
	wg.Wait()
}
