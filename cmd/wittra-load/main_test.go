package main

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for us := 1; us <= 100000; us++ {
		h.add(time.Duration(us) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50000}, {0.9, 90000}, {0.99, 99000}, {1, 100000}} {
		got := float64(h.quantile(c.q))
		if math.Abs(got-c.want)/c.want > 0.01 {
			t.Errorf("quantile(%v) = %v, want %v ±1%%", c.q, got, c.want)
		}
	}
	if h.max != 100000 || h.n != 100000 {
		t.Errorf("max %d n %d", h.max, h.n)
	}
	for i := 0; i < histBuckets; i++ {
		if got := histIndex(histValue(i)); got != i {
			t.Fatalf("histIndex(histValue(%d)) = %d", i, got)
		}
	}
}

func TestBitsetDiff(t *testing.T) {
	a, b := newBitset(200), newBitset(200)
	for _, i := range []uint64{0, 63, 64, 199} {
		a.set(i)
	}
	if b.set(5) || !b.set(5) {
		t.Fatal("set must report whether the bit was there")
	}
	b.set(63)
	in, onlyA, onlyB := a.diff(b)
	if in != 4 || onlyA != 3 || onlyB != 1 {
		t.Fatalf("diff = %d %d %d, want 4 3 1", in, onlyA, onlyB)
	}
}

func TestHTTPConn(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("auth-token") != "dG9r" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(401)
			return
		}
		if string(b) == "close" {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"accepted":1,"duplicates":0}`)
	}))
	srv.Start()
	defer srv.Close()
	hc, err := newHTTPConn(srv.URL+"/wittra", "dG9r", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.close()
	for i, body := range []string{"{}", "{}", "close", "{}"} {
		code, resp, err := hc.post([]byte(body))
		if err != nil || code != 200 {
			t.Fatalf("post %d: %d %v", i, code, err)
		}
		if a, d, ok := replyCounts(resp); !ok || a != 1 || d != 0 {
			t.Fatalf("post %d: reply %q", i, resp)
		}
		if body == "close" && hc.c != nil {
			t.Fatalf("connection kept after Connection: close")
		}
	}
}
