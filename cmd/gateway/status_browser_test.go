package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium. Without it the browser test skips
// on a developer machine, and fails in CI (CI set), where .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	return testutil.Command(t, "chromium", "chromium", "chromium-browser", "/usr/bin/chromium")
}

// browser is one headless chromium with one tab, closed at cleanup. It
// records console errors, uncaught exceptions and browser log errors
// (CSP violations, failed loads).
type browser struct {
	ctx context.Context

	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // tests may run as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.WindowSize(1100, 900),
	)
	b := &browser{}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
	})
	b.ctx = ctx
	// Starting chromium on a busy machine can take a while. The first
	// call's context must not time out (it owns the browser): the timeout
	// is a watchdog instead.
	started := make(chan error, 1)
	go func() {
		started <- chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, log.Enable, cdp.Empty{})
			return err
		}))
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium: %v", err)
		}
	case <-time.After(60 * time.Second):
		cancelTab()
		t.Fatal("chromium did not start within 60 s")
	}
	return b
}

// listen runs in the tab's event loop: it only records.
func (b *browser) listen(ev any) {
	{
		var msg string
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				msg = "console." + string(e.Type) + ": " + strings.Join(parts, " ")
			}
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			msg = fmt.Sprintf("exception: %s at %s:%d", d.Text, d.URL, d.LineNumber+1)
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError {
				msg = "log " + string(e.Entry.Source) + ": " + e.Entry.Text + " " + e.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}
}

func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page to a string.
func (b *browser) eval(t *testing.T, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}

// waitText polls the text of the element matching selector until ok.
func (b *browser) waitText(t *testing.T, what, selector string, ok func(string) bool) string {
	t.Helper()
	var text string
	expr := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, selector)
	outageWait(t, 60*time.Second, what, func() bool {
		text = b.eval(t, expr)
		return ok(text)
	})
	return text
}

func (b *browser) errs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

const (
	cssGreen = "rgb(26, 127, 55)" // --ok in status.css
	cssRed   = "rgb(198, 40, 40)" // --down
	plantSel = `[data-sink="plant"]`
)

// sinkLook is the plant card's class and its left border colour, as
// rendered.
func (b *browser) sinkLook(t *testing.T) string {
	t.Helper()
	return b.eval(t, `(() => { const c = document.querySelector('`+plantSel+`'); return c.className + " " + getComputedStyle(c).borderLeftColor; })()`)
}

func TestStatusPageInBrowser(t *testing.T) {
	r := startStatusRig(t)
	b := newBrowser(t) // after the gateway: closed before it at cleanup
	admin := r.gw.admin

	r.post(t, 0, 30, 5)
	waitStatus(t, admin, "30 messages delivered", func(s apiStatus) bool {
		return s.sink(t, "plant").Depth == 0 && s.sink(t, "plant").DeliveredTotal == 30
	})
	b.do(t, "load the page", chromedp.Navigate(admin+"/status"), chromedp.WaitVisible(chromedp.CSS("#sinks")))
	// The page refreshes itself from /api/status.
	b.waitText(t, "first refresh", "#fresh", func(s string) bool { return strings.HasPrefix(s, "updated") })
	b.waitText(t, "accepted total", `[data-k="intake.accepted_total"]`, func(s string) bool { return s == "30" })
	if look := b.sinkLook(t); !strings.Contains(look, "state-ok") || !strings.HasSuffix(look, cssGreen) {
		t.Fatalf("plant while mosquitto runs: %q", look)
	}
	if got := b.waitText(t, "plant connection", plantSel+` [data-k="link"]`, func(s string) bool { return s != "" }); !strings.HasPrefix(got, "connected") {
		t.Fatalf("plant connection: %q", got)
	}

	// Live numbers: more traffic shows up without a reload.
	r.post(t, 30, 10, 5)
	b.waitText(t, "accepted total after more traffic", `[data-k="intake.accepted_total"]`, func(s string) bool { return s == "40" })
	b.waitText(t, "intake rate", `[data-k="intake.rate_per_second"]`, func(s string) bool { return s != "0/s" && strings.HasSuffix(s, "/s") })
	b.waitText(t, "device rows", "#dev-count", func(s string) bool { return s == "5 matching of 5 seen" })

	// Outage: the plant card turns red with the reason, its backlog shows.
	r.mosq.Stop(syscall.SIGTERM)
	r.post(t, 40, 10, 5)
	outageWait(t, 60*time.Second, "plant card turns red", func() bool {
		look := b.sinkLook(t)
		return strings.Contains(look, "state-down") && strings.HasSuffix(look, cssRed)
	})
	b.waitText(t, "plant backlog", plantSel+` [data-k="depth"]`, func(s string) bool { return s == "10" })
	if got := b.waitText(t, "plant connection", plantSel+` [data-k="link"]`, func(s string) bool { return strings.HasPrefix(s, "disconnected") }); !strings.Contains(got, "connection refused") && !strings.Contains(got, "lost") && !strings.Contains(got, "EOF") {
		t.Logf("plant connection text: %q", got)
	}
	b.waitText(t, "plant last error", plantSel+` [data-k="last_error"]`, func(s string) bool { return strings.Contains(s, "not connected") })
	if look := b.sinkLook(t); !strings.Contains(b.sinkLookOther(t, "local"), "state-ok") {
		t.Fatalf("local should stay ok while plant is down (%s)", look)
	}
	// The picture for the README: a sink down, its backlog, the reason.
	b.waitText(t, "a fresh refresh", "#fresh", func(s string) bool { return strings.HasPrefix(s, "updated") })
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	cancel()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, png)

	// Back: green again once the backlog is delivered.
	r.mosq.Start()
	outageWait(t, 60*time.Second, "plant card turns green", func() bool {
		look := b.sinkLook(t)
		return strings.Contains(look, "state-ok") && strings.HasSuffix(look, cssGreen)
	})
	b.waitText(t, "plant backlog delivered", plantSel+` [data-k="depth"]`, func(s string) bool { return s == "0" })

	// Search narrows the device table.
	want := outageDevice(3)
	b.do(t, "search", chromedp.SendKeys(chromedp.CSS("#q"), strings.ToLower(want)))
	b.waitText(t, "search result", "#dev-count", func(s string) bool { return strings.HasPrefix(s, "1 matching") })
	if got := b.waitText(t, "searched row", `#devices tr td[data-k="id"]`, func(s string) bool { return s != "" }); got != want {
		t.Fatalf("searched device row: %q, want %q", got, want)
	}
	if got := b.waitText(t, "device values", `#devices tr [data-k="values"]`, func(s string) bool { return s != "" }); !strings.Contains(got, "temperature=21.75") {
		t.Fatalf("device values: %q", got)
	}

	if errs := b.errs(); len(errs) > 0 {
		t.Fatalf("browser errors:\n%s", strings.Join(errs, "\n"))
	}
}

func (b *browser) sinkLookOther(t *testing.T, name string) string {
	t.Helper()
	return b.eval(t, fmt.Sprintf(`document.querySelector('[data-sink=%q]').className`, name))
}

// saveScreenshot keeps the page's picture as a test artifact (go test
// -artifacts), and at $STATUS_SCREENSHOT when set (how docs/status-page.png
// is made: STATUS_SCREENSHOT=$PWD/docs/status-page.png go test -run
// TestStatusPageInBrowser ./cmd/gateway).
func saveScreenshot(t *testing.T, png []byte) {
	t.Helper()
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	paths := []string{filepath.Join(t.ArtifactDir(), "status-page.png")}
	if p := os.Getenv("STATUS_SCREENSHOT"); p != "" {
		paths = append(paths, p)
	}
	for _, p := range paths {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatalf("save screenshot: %v", err)
		}
		t.Logf("screenshot: %s (%d bytes)", p, len(png))
	}
}
