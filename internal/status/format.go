package status

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// The page is rendered twice over: by the server (html/template, so it
// reads without JavaScript) and by assets/status.js at each refresh. The
// formatters below and those in status.js give the same text.

// format renders v (as found in a Report) with formatter kind; now is the
// report's time, against which ages are counted.
func format(kind string, v any, now time.Time) string {
	switch kind {
	case "int":
		switch n := v.(type) {
		case uint64:
			return strconv.FormatUint(n, 10)
		case int64:
			return strconv.FormatInt(n, 10)
		case int:
			return strconv.Itoa(n)
		}
	case "rate":
		return fmtRate(v.(float64))
	case "bytes":
		return fmtBytes(v.(int64))
	case "dur":
		return fmtDur(v.(float64))
	case "ago":
		return fmtAgo(v.(*time.Time), now)
	case "agoT":
		t := v.(time.Time)
		return fmtAgo(&t, now)
	case "link":
		return fmtLink(v.(*Link), now)
	case "text":
		s := v.(string)
		if s == "" {
			return "—"
		}
		return s
	case "refusals":
		return fmtRefusals(v.(map[string]uint64))
	case "values":
		return fmtValues(v.([]Value))
	}
	return fmt.Sprint(v)
}

func fmtRate(r float64) string {
	switch {
	case r == 0:
		return "0/s"
	case r < 10:
		return strconv.FormatFloat(math.Round(r*100)/100, 'f', -1, 64) + "/s"
	}
	return strconv.FormatFloat(math.Round(r), 'f', -1, 64) + "/s"
}

func fmtBytes(b int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(b), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatInt(b, 10) + " B"
	}
	return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) + " " + units[i]
}

// fmtDur renders a duration in seconds coarsely: "42 s", "5 min", "3 h 4 min", "2 d 3 h".
func fmtDur(s float64) string {
	n := int64(math.Floor(s))
	switch {
	case n < 60:
		return strconv.FormatInt(max(n, 0), 10) + " s"
	case n < 3600:
		return strconv.FormatInt(n/60, 10) + " min"
	case n < 86400:
		return fmt.Sprintf("%d h %d min", n/3600, n%3600/60)
	}
	return fmt.Sprintf("%d d %d h", n/86400, n%86400/3600)
}

func fmtAgo(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return fmtDur(now.Sub(*t).Seconds()) + " ago"
}

func fmtLink(l *Link, now time.Time) string {
	if l == nil {
		return "in-process, no connection"
	}
	since := ""
	if l.Since != nil {
		since = " for " + fmtDur(now.Sub(*l.Since).Seconds())
	}
	if l.Connected {
		return "connected" + since
	}
	s := "disconnected" + since
	if l.LastError != "" {
		s += ": " + l.LastError
	}
	return s
}

func fmtRefusals(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range refusalCodes(m) {
		parts = append(parts, fmt.Sprintf("%s×%d", c, m[c]))
	}
	return strings.Join(parts, ", ")
}

func fmtValues(vs []Value) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Path + "=" + v.Value
	}
	return strings.Join(parts, " · ")
}

// sparkW and sparkH are the sparkline's viewBox.
const sparkW, sparkH = 360, 40

// sparkPoints is an SVG polyline's points for vs, scaled to the viewBox,
// highest value at the top (a flat line at the bottom when all are 0).
func sparkPoints[T uint64 | float64](vs []T) string {
	if len(vs) == 0 {
		return ""
	}
	var top float64
	for _, v := range vs {
		top = max(top, float64(v))
	}
	var b strings.Builder
	step := float64(sparkW) / float64(max(len(vs)-1, 1))
	for i, v := range vs {
		y := float64(sparkH) - 1
		if top > 0 {
			y = float64(sparkH) - 1 - float64(v)/top*float64(sparkH-2)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", float64(i)*step, y)
	}
	return b.String()
}

// funcs are the template's formatters.
func funcs() template.FuncMap {
	return template.FuncMap{
		"f":      func(kind string, v any, now time.Time) string { return format(kind, v, now) },
		"sparkU": func(vs []uint64) string { return sparkPoints(vs) },
		"sparkF": func(vs []float64) string { return sparkPoints(vs) },
		"fill": func(q Queue) float64 {
			if q.MaxBytes <= 0 {
				return 0
			}
			return min(float64(q.Bytes)/float64(q.MaxBytes), 1)
		},
		"sinkOf": func(s Sink, now time.Time) sinkView { return sinkView{s, now} },
		"devOf":  func(d Device, now time.Time) deviceView { return deviceView{d, now} },
		"utc": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
	}
}

// sinkView and deviceView carry the report's time into a sub-template.
type sinkView struct {
	Sink Sink
	Now  time.Time
}

type deviceView struct {
	Device Device
	Now    time.Time
}
