package broker

import (
	"strings"
	"testing"

	"wittra-gateway/internal/testutil"

	"github.com/rs/zerolog"
)

// mochi's lifecycle lines (hooks added, listeners attached, started) are
// debug: at info the gateway's own start line is the first one an operator
// reads. At debug they are still there.
func TestBrokerLifecycleLinesAreDebug(t *testing.T) {
	for _, c := range []struct {
		level zerolog.Level
		want  bool
	}{{zerolog.InfoLevel, false}, {zerolog.DebugLevel, true}} {
		buf := new(testutil.LogBuffer)
		srv, err := New(Config{Listeners: []Listener{{Type: TypeTCP, Address: "127.0.0.1:0"}}}, zerolog.New(buf).Level(c.level))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		out := buf.String()
		if got := strings.Contains(out, `"component":"broker"`) && strings.Contains(out, "listener"); got != c.want {
			t.Errorf("level %s: lifecycle lines logged = %v, want %v:\n%s", c.level, got, c.want, out)
		}
	}
}
