package bridge

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
)

func newTestReceiver(t *testing.T, cfg ReceiverConfig, log zerolog.Logger) (*buffer.Queue, string) {
	t.Helper()
	q, err := buffer.Open(buffer.Config{Path: filepath.Join(t.TempDir(), "q.db"), Consumers: []string{"s"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewReceiver(cfg, q, log))
	t.Cleanup(func() {
		srv.Close()
		q.Close()
	})
	return q, srv.URL
}

func TestRefusalsAreLoggedOncePerInterval(t *testing.T) {
	logs := new(testutil.LogBuffer)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	_, url := newTestReceiver(t, ReceiverConfig{Routes: []Route{{Path: "/wittra", Token: "tok"}}, LogInterval: time.Minute, Now: clock}, zerolog.New(logs))
	post := func() {
		resp, err := http.Post(url+"/wittra", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("code %d, want 401", resp.StatusCode)
		}
	}
	for range 50 {
		post()
	}
	if n := strings.Count(logs.String(), "webhook request refused"); n != 1 {
		t.Fatalf("50 refusals within the interval logged %d times, want 1:\n%s", n, logs.String())
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	post()
	out := logs.String()
	if n := strings.Count(out, "webhook request refused"); n != 2 {
		t.Fatalf("after the interval: logged %d times, want 2", n)
	}
	if !strings.Contains(out, `"suppressed_since_last":49`) {
		t.Fatalf("the second line does not count the 49 suppressed refusals:\n%s", out)
	}
}

func TestConcurrencyCapAnswers503BeforeReadingTheBody(t *testing.T) {
	q, url := newTestReceiver(t, ReceiverConfig{Routes: []Route{{Path: "/wittra"}}, MaxConcurrent: 1}, zerolog.Nop())
	// The first request holds the only slot: its body never finishes. It
	// goes on a connection of its own: an idle keep-alive connection of
	// the shared transport to an earlier test's server on the same port
	// would fail it, and its streamed body cannot be retried.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	// Closed on every exit: a failure must not leave the handler (and the
	// server's Close at cleanup) waiting for this body forever.
	defer pw.Close()
	type result struct {
		code int
		err  error
	}
	first := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Post(url+"/wittra", "application/json", pr)
		if err != nil {
			first <- result{err: err}
			return
		}
		resp.Body.Close()
		first <- result{code: resp.StatusCode}
	}()
	pw.Write([]byte(`{"deviceId":`))
	// Generous: on a loaded machine the first request may take a while to
	// reach the handler; the test asserts the 503, not how soon it comes.
	var code, accepted int // accepted: second requests answered before the first arrived
	var retry string
	testutil.Poll(60*time.Second, func() bool { // the first request may not have arrived yet
		select {
		case r := <-first:
			t.Fatalf("the first request ended before its body did: %d %v", r.code, r.err)
		default:
		}
		resp, err := http.Post(url+"/wittra", "application/json", strings.NewReader(`{"deviceId":"D2"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		code, retry = resp.StatusCode, resp.Header.Get("Retry-After")
		if code == 200 {
			accepted++
		}
		return code == 503
	})
	if code != 503 || retry == "" {
		t.Fatalf("second request while the slot is taken: %d (Retry-After %q), want 503 with Retry-After", code, retry)
	}
	pw.Write([]byte(`"D1"}`))
	pw.Close()
	if r := <-first; r.code != 200 {
		t.Fatalf("first request = %d %v, want 200", r.code, r.err)
	}
	if st, _ := q.Stats(); st.Messages != uint64(1+accepted) {
		t.Fatalf("queued %d, want the first request's message and the %d accepted before it arrived", st.Messages, accepted)
	}
}

// A second, different refusal from the same client is logged at once; the
// same refusal with other numbers in it is not.
func TestRefusalLogKeyedByReason(t *testing.T) {
	logs := new(testutil.LogBuffer)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	_, url := newTestReceiver(t, ReceiverConfig{Routes: []Route{{Path: "/wittra"}}, Now: func() time.Time { return now }}, zerolog.New(logs))
	post := func(body string) {
		resp, err := http.Post(url+"/wittra", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("code %d, want 400", resp.StatusCode)
		}
	}
	post(`{"deviceId": 1,}`)  // not JSON, at one offset
	post(`{"deviceId":  1,}`) // not JSON, at another offset: alike
	post(`[{"deviceId":"D1"}, 5]`)
	out := logs.String()
	if n := strings.Count(out, "webhook request refused"); n != 2 {
		t.Fatalf("logged %d refusals, want 2 (one per reason):\n%s", n, out)
	}
	if !strings.Contains(out, "not JSON") || !strings.Contains(out, "is not an object") {
		t.Fatalf("both reasons should be logged:\n%s", out)
	}
}
