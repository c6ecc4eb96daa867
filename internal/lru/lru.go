// Package lru is the list of the bounded caches that forget what was heard
// of longest ago first (the broker's retained store, the device topics):
// intrusive and doubly linked, so an element costs two pointers and no
// allocation, and moving it to the back is O(1).
package lru

// Links are an element's place on a List; the element holds them.
type Links[T any] struct{ prev, next *T }

// Element is a pointer to T that gives its Links.
type Element[T any] interface {
	*T
	Links() *Links[T]
}

// List orders elements from the one heard of longest ago (Front) to the
// latest. Its zero value is empty; it is not safe for concurrent use.
type List[T any, E Element[T]] struct{ head, tail *T }

// Front returns the element heard of longest ago, or nil.
func (l *List[T, E]) Front() *T { return l.head }

// Next returns the element after e, or nil.
func (l *List[T, E]) Next(e *T) *T { return E(e).Links().next }

// PushBack puts e, which is on no list, at the back (the latest).
func (l *List[T, E]) PushBack(e *T) {
	ln := E(e).Links()
	ln.prev, ln.next = l.tail, nil
	if l.tail != nil {
		E(l.tail).Links().next = e
	} else {
		l.head = e
	}
	l.tail = e
}

// Remove takes e off the list; an element that is not on it stays as it
// is.
func (l *List[T, E]) Remove(e *T) {
	ln := E(e).Links()
	if ln.prev == nil && l.head != e {
		return
	}
	if ln.prev != nil {
		E(ln.prev).Links().next = ln.next
	} else {
		l.head = ln.next
	}
	if ln.next != nil {
		E(ln.next).Links().prev = ln.prev
	} else {
		l.tail = ln.prev
	}
	ln.prev, ln.next = nil, nil
}

// MoveToBack makes e, on the list or not, the latest.
func (l *List[T, E]) MoveToBack(e *T) {
	l.Remove(e)
	l.PushBack(e)
}
