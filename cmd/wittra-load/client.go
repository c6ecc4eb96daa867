package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// httpConn is a minimal HTTP/1.1 keep-alive client for one connection:
// POST with a Content-Length body, read a Content-Length (or close-
// delimited) reply. It costs a fraction of net/http's client, which
// matters when the generator shares two cores with the gateway.
type httpConn struct {
	addr    string
	head    []byte // request line and fixed headers, up to "Content-Length: "
	timeout time.Duration

	c    net.Conn
	br   *bufio.Reader
	req  []byte
	resp []byte
}

func newHTTPConn(rawURL, token string, timeout time.Duration) (*httpConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("url %s: only http:// is supported", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host += ":80"
	}
	path := u.RequestURI()
	var h bytes.Buffer
	fmt.Fprintf(&h, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: wittra-load\r\nContent-Type: application/json\r\n", path, u.Host)
	if token != "" {
		fmt.Fprintf(&h, "auth-token: %s\r\n", token)
	}
	h.WriteString("Content-Length: ")
	return &httpConn{addr: host, head: h.Bytes(), timeout: timeout}, nil
}

var errMalformed = errors.New("malformed HTTP response")

// post sends body and returns the status code and reply body (valid until
// the next call). Any error closes the connection; the next call redials.
func (h *httpConn) post(body []byte) (int, []byte, error) {
	if h.c == nil {
		c, err := net.DialTimeout("tcp", h.addr, h.timeout)
		if err != nil {
			return 0, nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		h.c = c
		if h.br == nil {
			h.br = bufio.NewReaderSize(c, 4096)
		} else {
			h.br.Reset(c)
		}
	}
	code, resp, keep, err := h.roundTrip(body)
	if err != nil || !keep {
		h.close()
	}
	return code, resp, err
}

func (h *httpConn) close() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

func (h *httpConn) roundTrip(body []byte) (code int, resp []byte, keep bool, err error) {
	h.c.SetDeadline(time.Now().Add(h.timeout))
	h.req = append(h.req[:0], h.head...)
	h.req = strconv.AppendInt(h.req, int64(len(body)), 10)
	h.req = append(h.req, "\r\n\r\n"...)
	h.req = append(h.req, body...)
	if _, err := h.c.Write(h.req); err != nil {
		return 0, nil, false, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, errMalformed
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, errMalformed
	}
	keep = line[7] == '1'
	clen := -1
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return code, nil, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return code, nil, false, errMalformed
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			clen, err = strconv.Atoi(string(v))
			if err != nil || clen < 0 {
				return code, nil, false, errMalformed
			}
		case bytes.EqualFold(k, []byte("Connection")):
			if bytes.EqualFold(v, []byte("close")) {
				keep = false
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			return code, nil, false, fmt.Errorf("%w: transfer-encoding %s not supported", errMalformed, v)
		}
	}
	if clen < 0 {
		// Delimited by close.
		h.resp, err = io.ReadAll(io.LimitReader(h.br, 1<<20))
		return code, h.resp, false, err
	}
	if cap(h.resp) < clen {
		h.resp = make([]byte, clen)
	}
	h.resp = h.resp[:clen]
	if _, err := io.ReadFull(h.br, h.resp); err != nil {
		return code, nil, false, err
	}
	return code, h.resp, keep, nil
}

// replyCounts reads {"accepted":N,"duplicates":M}.
func replyCounts(b []byte) (accepted, duplicates uint64, ok bool) {
	a, ok1 := jsonUint(b, `"accepted":`)
	d, ok2 := jsonUint(b, `"duplicates":`)
	return a, d, ok1 && ok2
}

func jsonUint(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	var v uint64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + uint64(b[n]-'0')
		n++
	}
	return v, n > 0
}
