package status

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"time"
)

//go:embed assets
var assets embed.FS

var page = template.Must(template.New("page.html").Funcs(funcs()).ParseFS(assets, "assets/page.html"))

// csp allows nothing but this origin's own script, style and images, and
// fetches to this origin: no inline script or style, no framing, no forms.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register adds the page (GET / and GET /status), GET /api/status and the
// page's static files (GET /static/...) to mux. Every route is a GET: the
// page changes nothing.
func (s *Status) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.HandleFunc("GET /status", s.servePage)
	mux.HandleFunc("GET /api/status", s.serveAPI)
	static, _ := fs.Sub(assets, "assets/static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", securityHeaders(files))
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

// pageData is what page.html renders.
type pageData struct {
	Report
	Search   string
	Now      time.Time
	SinkTmpl Sink   // an empty sink, for the <template> the script clones
	DevTmpl  Device // an empty device, likewise
}

func (s *Status) servePage(w http.ResponseWriter, r *http.Request) {
	q := queryOf(r)
	rep := s.Report(q)
	var buf bytes.Buffer
	if err := page.Execute(&buf, pageData{Report: rep, Search: q.Search, Now: rep.Time, SinkTmpl: Sink{State: StateOK}}); err != nil {
		s.cfg.Log.Error().Err(err).Msg("render status page")
		http.Error(w, "render status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	securityHeaders(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})).ServeHTTP(w, r)
}

func (s *Status) serveAPI(w http.ResponseWriter, r *http.Request) {
	b, err := json.Marshal(s.Report(queryOf(r)))
	if err != nil {
		http.Error(w, "encode status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(append(b, '\n'))
}

// queryOf reads ?devices=N (0 = DefaultDevices, -1 = all) and ?q=text.
// A malformed number is ignored rather than refused: the page is for
// reading.
func queryOf(r *http.Request) Query {
	v := r.URL.Query()
	q := Query{Search: v.Get("q")}
	if n, err := strconv.Atoi(v.Get("devices")); err == nil {
		q.Devices = n
	}
	if len(q.Search) > 200 {
		q.Search = q.Search[:200]
	}
	return q
}
