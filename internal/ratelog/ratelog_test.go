package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := New[string](time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	step := func(key string, at time.Duration, wantOK bool, wantSuppressed int) {
		t.Helper()
		if ok, n := l.Allow(key, t0.Add(at)); ok != wantOK || n != wantSuppressed {
			t.Errorf("Allow(%s, +%v) = %v, %d; want %v, %d", key, at, ok, n, wantOK, wantSuppressed)
		}
	}
	step("a", 0, true, 0)
	step("a", 10*time.Second, false, 0)
	step("b", 20*time.Second, true, 0) // another key is not held back
	step("a", 30*time.Second, false, 0)
	step("a", 61*time.Second, true, 2) // the two held back are counted
	step("a", 62*time.Second, false, 0)

	// The table is bounded: past MaxKeys it starts afresh.
	for i := range MaxKeys + 1 {
		l.Allow(string(rune(i+1000)), t0)
	}
	if len(l.seen) > MaxKeys {
		t.Errorf("%d keys kept, bound %d", len(l.seen), MaxKeys)
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"invalid JSON at byte 123": "invalid JSON at byte #",
		"element 4 of 17":          "element # of #",
		"":                         "",
	} {
		if got := Fold(in); got != want {
			t.Errorf("Fold(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Fold(string(make([]byte, 100))); len(got) != 64 {
		t.Errorf("Fold kept %d bytes, want 64", len(got))
	}
}
