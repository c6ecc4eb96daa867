package lru

import (
	"slices"
	"testing"
)

type item struct {
	n     int
	links Links[item]
}

func (i *item) Links() *Links[item] { return &i.links }

func order(l *List[item, *item]) []int {
	var out []int
	for e := l.Front(); e != nil; e = l.Next(e) {
		out = append(out, e.n)
	}
	return out
}

func TestList(t *testing.T) {
	var l List[item, *item]
	items := []*item{{n: 0}, {n: 1}, {n: 2}, {n: 3}}
	for _, it := range items {
		l.PushBack(it)
	}
	steps := []struct {
		do   func()
		want []int
	}{
		{func() {}, []int{0, 1, 2, 3}},
		{func() { l.MoveToBack(items[1]) }, []int{0, 2, 3, 1}},
		{func() { l.MoveToBack(items[1]) }, []int{0, 2, 3, 1}}, // already the latest
		{func() { l.Remove(items[0]) }, []int{2, 3, 1}},        // the front
		{func() { l.Remove(items[0]) }, []int{2, 3, 1}},        // not on the list: no change
		{func() { l.Remove(items[1]) }, []int{2, 3}},           // the back
		{func() { l.MoveToBack(items[0]) }, []int{2, 3, 0}},    // not on the list: added
		{func() { l.Remove(items[3]) }, []int{2, 0}},           // the middle
		{func() { l.Remove(items[2]); l.Remove(items[0]) }, nil},
		{func() { l.PushBack(items[3]) }, []int{3}},
	}
	for i, s := range steps {
		s.do()
		if got := order(&l); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: order %v, want %v", i, got, s.want)
		}
		// Walking back from the tail gives the same order reversed.
		var back []int
		for e := l.tail; e != nil; e = e.links.prev {
			back = append(back, e.n)
		}
		slices.Reverse(back)
		if !slices.Equal(back, s.want) {
			t.Fatalf("step %d: backwards %v, want %v", i, back, s.want)
		}
	}
}
