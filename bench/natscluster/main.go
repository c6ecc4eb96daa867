// Command natscluster runs a local NATS JetStream cluster in-process
// (internal/natstest) for the drain-jetstream benchmark: it writes the
// client URLs, one per line, to -out once JetStream answers on every node,
// and runs until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"wittra-gateway/internal/natstest"
)

func main() {
	dir := flag.String("dir", "", "parent directory of the nodes' JetStream stores (required)")
	nodes := flag.Int("nodes", 3, "servers in the cluster")
	out := flag.String("out", "", "file to write the client URLs to when ready (required)")
	flag.Parse()
	if *dir == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "natscluster: -dir and -out are required")
		os.Exit(2)
	}
	c, err := natstest.Start(natstest.Options{Nodes: *nodes, Dir: *dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natscluster:", err)
		os.Exit(1)
	}
	tmp := *out + ".tmp"
	err = os.WriteFile(tmp, []byte(strings.Join(c.ClientURLs(), "\n")+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, *out) // the runner sees the file complete or not at all
	}
	if err != nil {
		c.Close()
		fmt.Fprintln(os.Stderr, "natscluster:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "natscluster: %d nodes ready: %s\n", *nodes, strings.Join(c.ClientURLs(), " "))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	<-sigs
	c.Close()
}
