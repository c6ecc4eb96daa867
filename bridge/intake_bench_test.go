package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
)

// nopAppender accepts everything without storing: the receiver's own cost.
type nopAppender struct{}

func (nopAppender) Append(_ context.Context, e []buffer.Entry) (buffer.AppendResult, error) {
	return buffer.AppendResult{Accepted: len(e)}, nil
}

// benchWriter is a minimal ResponseWriter, so the figures are the
// receiver's, not a recorder's.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// BenchmarkReceiverServeHTTP: one ~300-byte Wittra message per request
// through ServeHTTP, queue excluded (allocations and CPU of the intake
// path in the receiver: route, checks, body read, identity, envelope,
// reply).
func BenchmarkReceiverServeHTTP(b *testing.B) {
	r := NewReceiver(ReceiverConfig{Routes: []Route{{Path: "/wittra"}}}, nopAppender{}, zerolog.Nop())
	body := []byte(`{"deviceId":"D00124B001E2A1B2C","gatewayId":"G00124B0012345678AB","projectId":"P4nB8vQ2wE6rT1yU3iOa","payloadId":"a1B2c3D4e5F6g7H8i9J0","payloadType":"DATA","source":"p","timestamp":"2024-03-12T08:15:42.517000+00:00","payload":{"temperature":21.75,"battery":{"percentage":75,"voltage":3.61}}}`)
	req, _ := http.NewRequest(http.MethodPost, "http://gw/wittra", nil)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	rd := bytes.NewReader(body)
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		clear(w.h)
		w.code = 0
		r.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatal(fmt.Sprint("code ", w.code))
		}
	}
}
