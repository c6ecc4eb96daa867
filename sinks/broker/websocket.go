package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is an MQTT-over-WebSocket listener. It replaces mochi's
// listeners.Websocket, which (v2.7.9) accepts every Origin, binds only in
// Serve (so bind errors never reach New, and port 0 never resolves) and
// reports the configured rather than the bound address.
//
// Origin: requests without an Origin header (MQTT clients that are not
// browsers, which could send any Origin anyway) are accepted. Browser
// requests are accepted from the origins listed in allowed_origins, or,
// when that list is empty, only from the same host (gorilla's default
// check), so a foreign web page cannot use the broker through a visitor's
// browser.
type wsListener struct {
	id      string
	address string
	tlsCfg  *tls.Config

	mu        sync.Mutex
	ln        net.Listener
	srv       *http.Server
	log       *slog.Logger
	establish listeners.EstablishFn
	closed    bool
	upgrader  websocket.Upgrader
}

func newWebsocket(id, address string, tlsCfg *tls.Config, allowedOrigins []string) *wsListener {
	l := &wsListener{
		id:      id,
		address: address,
		tlsCfg:  tlsCfg,
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{"mqtt"},
			HandshakeTimeout: 10 * time.Second,
			// CheckOrigin nil: same origin, or no Origin header.
		},
	}
	if len(allowedOrigins) > 0 {
		allowed := append([]string(nil), allowedOrigins...)
		l.upgrader.CheckOrigin = func(r *http.Request) bool {
			return originAllowed(r.Header.Values("Origin"), allowed)
		}
	}
	return l
}

// originAllowed reports whether a request with the given Origin header
// values may upgrade: no Origin (not a browser), or exactly one that is in
// allowed (case-insensitive, as scheme and host are).
func originAllowed(origins, allowed []string) bool {
	switch len(origins) {
	case 0:
		return true
	case 1:
		for _, a := range allowed {
			if strings.EqualFold(origins[0], a) {
				return true
			}
		}
	}
	return false
}

// ID returns the listener id.
func (l *wsListener) ID() string { return l.id }

// Protocol returns "ws" or "wss".
func (l *wsListener) Protocol() string {
	if l.tlsCfg != nil {
		return "wss"
	}
	return "ws"
}

// Address returns the bound address once Init succeeded.
func (l *wsListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *wsListener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	if l.tlsCfg != nil {
		ln = tls.NewListener(ln, l.tlsCfg)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", l.handle)
	l.mu.Lock()
	l.log = log
	l.ln = ln
	l.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed || l.srv == nil {
		l.mu.Unlock()
		return
	}
	l.establish = establish
	srv, ln := l.srv, l.ln
	l.mu.Unlock()

	err := srv.Serve(ln)
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !closed {
		l.log.Error("websocket listener stopped", "error", err, "listener", l.id)
	}
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil) // answers the error itself
	if err != nil {
		l.log.Debug("websocket upgrade refused", "error", err, "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		return
	}
	defer c.Close()

	l.mu.Lock()
	establish := l.establish
	l.mu.Unlock()
	if err := establish(l.id, &wsConn{Conn: c.UnderlyingConn(), c: c}); err != nil {
		l.log.Debug("client connection ended", "error", err, "listener", l.id)
	}
}

// Close stops accepting, then disconnects this listener's clients.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	srv, ln := l.srv, l.ln
	l.mu.Unlock()

	if first && srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(ctx) // hijacked (MQTT) connections are not waited for
		cancel()
		_ = ln.Close() // in case Serve never ran
	}
	closeClients(l.id)
}

// wsConn adapts a websocket connection to the byte stream mochi reads:
// each binary message is read through, in order. (As mochi's own wsConn.)
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, listeners.ErrInvalidMessage
			}
			ws.r = r
		}
		var n int
		for n < len(p) {
			br, err := ws.r.Read(p[n:])
			n += br
			if err != nil {
				ws.r = nil
				if !errors.Is(err, io.EOF) {
					return n, err
				}
				break
			}
		}
		if n > 0 || len(p) == 0 {
			return n, nil
		}
		// an empty message: read the next one rather than return 0, nil
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (ws *wsConn) Close() error { return ws.Conn.Close() }

var _ listeners.Listener = (*wsListener)(nil)
