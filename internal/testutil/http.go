package testutil

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HTTPClient is a client for load on loopback: keep-alive connections
// (conns per host), no proxy, no compression, requests bounded by timeout.
// Its idle connections close at cleanup.
func HTTPClient(t testing.TB, conns int, timeout time.Duration) *http.Client {
	c := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// Post posts a JSON body; a reply only counts when it was read whole
// (reply: the first 4 KiB, trimmed).
func Post(c *http.Client, url, body string) (code int, reply string, hdr http.Header, err error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return 0, "", nil, err
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header, nil
}

// ErrClass names the kind of a request's transport error, for counting:
// refused, reset, eof, timeout or other.
func ErrClass(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timeout"
	}
	return "other"
}
