package testutil

import (
	"fmt"
	"slices"
	"sync"
)

// IDSet is a goroutine-safe multiset of message ids (payloadIds): what a
// load generator got accepted, what a subscriber received; or of outcome
// keys to count. It remembers the order in which ids were first added.
type IDSet struct {
	mu    sync.Mutex
	m     map[string]int
	order []string
}

// Add adds each id once more.
func (s *IDSet) Add(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]int)
	}
	for _, id := range ids {
		if s.m[id] == 0 {
			s.order = append(s.order, id)
		}
		s.m[id]++
	}
}

// List returns the distinct ids in the order they were first added.
func (s *IDSet) List() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// Len is the number of distinct ids.
func (s *IDSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Count is how often id was added.
func (s *IDSet) Count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

// Total is the number of additions.
func (s *IDSet) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.m {
		n += c
	}
	return n
}

// Repeated is the number of ids added more than once.
func (s *IDSet) Repeated() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.m {
		if c > 1 {
			n++
		}
	}
	return n
}

// Missing lists the ids of want that were never added, in want's order.
func (s *IDSet) Missing(want []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range want {
		if s.m[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// Minus lists the ids of s that are not in o.
func (s *IDSet) Minus(o *IDSet) []string {
	return o.Missing(s.List())
}

// String shows each id with its count (for outcome tallies such as
// "503" or "refused").
func (s *IDSet) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.m)
}
