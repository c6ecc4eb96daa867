// Package freeport finds free loopback TCP ports for tests and benchmarks
// that start servers as separate processes or before they can take port 0.
package freeport

import (
	"fmt"
	"net"
)

// Ports returns n distinct free loopback ports. The listeners are closed
// before the caller binds them: another process could take one in between
// (a tiny race, accepted in tests and benchmarks).
func Ports(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Addrs returns n distinct free loopback addresses, "127.0.0.1:port".
func Addrs(n int) ([]string, error) {
	ports, err := Ports(n)
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i, p := range ports {
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out, nil
}
