package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/clock"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/broker"
	"wittra-gateway/sinks/cumulocity"
	"wittra-gateway/sinks/jetstream"
	"wittra-gateway/sinks/mqttclient"
)

// shutdownBudget is the whole time a stop may take (10 s, docs/contract.md#operations); the
// systemd unit's TimeoutStopSec is above it.
const shutdownBudget = 9 * time.Second

// RunCommand runs the gateway until SIGINT/SIGTERM.
type RunCommand struct {
	Stderr io.Writer
	// Reload asks for the config to be read again (SIGHUP, systemctl
	// reload); nil: never.
	Reload <-chan os.Signal
	// ready, when set, is called once the queue is open and every
	// listener is up (tests use it; systemd notify will too).
	ready func(*gateway)
	// timing shortens fixed delays (tests); zero fields keep the product's.
	timing timing
}

func (c *RunCommand) Run(ctx context.Context, args []string) error {
	var path string
	fs := newFlagSet("run", c.Stderr, &path)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return usageError{err}
	}
	log, err := newLogger(cfg.Log, c.Stderr)
	if err != nil {
		return usageError{err}
	}
	// The level lives in zerolog's process-wide setting, which a reload can
	// lower or raise; the logger itself lets everything through to it.
	zerolog.SetGlobalLevel(log.GetLevel())
	defer zerolog.SetGlobalLevel(zerolog.TraceLevel)
	log = log.Level(zerolog.TraceLevel)
	g, err := startGateway(cfg, c.timing, log)
	if err != nil {
		log.Error().Err(err).Msg("start failed")
		return err
	}
	if c.ready != nil {
		c.ready(g)
	}
	notify(log, daemon.SdNotifyReady)
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	go g.watchdog(wdCtx)
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info().Msg("stopping")
			break wait
		case err = <-g.fatal:
			log.Error().Err(err).Msg("stopping after a fatal error")
			break wait
		case <-g.queue.Damaged():
			err = g.queue.Ping(context.Background()) // the queue's ErrDamaged
			log.Error().Err(err).Int("exit_status", exitQueueDamaged).Msg("stopping: the queue file is damaged; the next start quarantines and salvages it")
			break wait
		case <-c.Reload:
			cfg = g.reloadFrom(path, cfg)
		}
	}
	stopWatchdog()
	notify(log, daemon.SdNotifyStopping)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	if cerr := g.close(sctx); cerr != nil {
		log.Error().Err(cerr).Msg("unclean stop")
		return errors.Join(err, cerr)
	}
	log.Info().Msg("stopped")
	return err
}

// newLogger builds the one logger of the process.
func newLogger(cfg LogConfig, w io.Writer) (zerolog.Logger, error) {
	name := strings.TrimSpace(cfg.Level)
	if name == "" {
		name = "info" // ParseLevel("") is NoLevel, which would mute everything
	}
	level, err := zerolog.ParseLevel(name)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("log.level: %w", err)
	}
	switch cfg.Format {
	case "console":
		// Colours only for a person at a terminal, never into a file or the journal.
		f, isFile := w.(*os.File)
		color := isFile && isatty.IsTerminal(f.Fd())
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.DateTime, NoColor: !color}
	case "journald":
		w = journaldWriter{w}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// journaldWriter prefixes each JSON line with its syslog priority (<3>
// error ... <7> debug). journald strips the prefix and files the line under
// that priority, so `journalctl -p warning` finds warnings; plain lines would
// all be priority 6.
type journaldWriter struct{ w io.Writer }

func (j journaldWriter) Write(p []byte) (int, error) { return j.WriteLevel(zerolog.InfoLevel, p) }

func (j journaldWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	prio := "<6>"
	switch {
	case l >= zerolog.ErrorLevel && l < zerolog.NoLevel:
		prio = "<3>"
	case l == zerolog.WarnLevel:
		prio = "<4>"
	case l <= zerolog.DebugLevel:
		prio = "<7>"
	}
	line := make([]byte, 0, len(prio)+len(p))
	line = append(append(line, prio...), p...)
	if _, err := j.w.Write(line); err != nil {
		return 0, err
	}
	return len(p), nil
}

// gateway is a running gateway: every component, in start order.
type gateway struct {
	log        zerolog.Logger
	timing     timing
	queue      *buffer.Queue
	brokerSrv  *broker.Server
	sinks      []sinks.Sink
	forwarders []*bridge.Forwarder
	receiver   *bridge.Receiver
	webhook    *http.Server
	webhookLn  net.Listener
	// webhookScheme is http or https, set before the server starts (the
	// server's own TLSConfig is changed by ServeTLS: not to be read).
	webhookScheme     string
	acmeHTTP          *http.Server                // http-01 challenges; nil unless webhook.tls.acme.http_listen
	acmeCancel        context.CancelFunc          // stops the ACME certificate loop
	webhookCertExpiry func() map[string]time.Time // webhook certificate expiry by name; nil for plain HTTP
	admin             *http.Server
	adminLn           net.Listener
	ready             atomic.Bool // /readyz: set once everything is up, cleared at stop
	names             *names      // devices seen and Wittra API names (names.go)

	fwdCancel context.CancelFunc
	fwdWG     sync.WaitGroup
	srvWG     sync.WaitGroup
	fatal     chan error
	closeOnce sync.Once
	closeErr  error
}

func startGateway(cfg *Config, tm timing, log zerolog.Logger) (g *gateway, err error) {
	g = &gateway{log: log, timing: tm.withDefaults(), fatal: make(chan error, 1)}
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
			defer cancel()
			g.close(ctx)
		}
	}()

	names := make([]string, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		names[i] = s.Name
	}
	g.queue, err = buffer.Open(bufferConfig(cfg, names), log.With().Str("component", "queue").Logger())
	if err != nil {
		return g, err
	}

	if err := g.openNames(cfg); err != nil {
		return g, err
	}

	if cfg.Broker.Enabled {
		g.brokerSrv, err = broker.New(brokerConfig(cfg), log)
		if err != nil {
			return g, fmt.Errorf("embedded broker: %w", err)
		}
		if err := g.brokerSrv.Start(); err != nil {
			return g, fmt.Errorf("embedded broker: %w", err)
		}
	}

	for _, sc := range cfg.Sinks {
		// Each sink names its own component and sink in its lines; one key
		// each, never twice in a line.
		s, err := g.newSink(cfg, sc, log)
		if err != nil {
			return g, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		g.sinks = append(g.sinks, s)
		r, err := g.queue.Reader(sc.Name)
		if err != nil {
			return g, err
		}
		flog := log.With().Str("component", "forwarder").Str("sink", sc.Name).Logger()
		backlog, _ := bridge.ParseBacklog(sc.Backlog) // validated with the config
		g.forwarders = append(g.forwarders, bridge.NewForwarder(bridge.ForwarderConfig{Attempt: g.timing.forwarderAttempt, Backlog: backlog}, r, s, flog))
	}
	fctx, cancel := context.WithCancel(context.Background())
	g.fwdCancel = cancel
	for _, f := range g.forwarders {
		g.fwdWG.Add(1)
		go func() {
			defer g.fwdWG.Done()
			if err := f.Run(fctx); err != nil {
				g.fail(fmt.Errorf("forwarder: %w", err))
			}
		}()
	}

	g.receiver = bridge.NewReceiver(receiverConfig(cfg), g.queue, log.With().Str("component", "webhook").Logger())
	g.runNames()
	for _, rt := range cfg.Webhook.Routes {
		if rt.Token == "" {
			log.Warn().Str("path", rt.Path).Msg("webhook route has no token: anyone who can reach it can post")
		}
	}
	if err := g.startWebhook(cfg); err != nil {
		return g, err
	}
	if cfg.Admin.Listen != "" {
		if err := g.startAdmin(cfg); err != nil {
			return g, err
		}
	}
	g.ready.Store(true)
	st, _ := g.queue.Stats()
	log.Info().
		Strs("listeners", g.listenerURLs(cfg)).
		Strs("routes", routePaths(cfg)).
		Strs("sinks", names).
		Str("queue", cfg.Buffer.Path).
		Uint64("queued", st.Messages).
		Str("version", Version).
		Bool("clock_trusted", g.queue.Clock().Trusted).
		Time("clock", g.queue.Clock().Wall).
		Msg("gateway ready")
	return g, nil
}

// listenerURLs names every listener with its scheme, for the start line:
// what an operator checks first (is the webhook HTTPS, where is the admin).
func (g *gateway) listenerURLs(cfg *Config) []string {
	out := []string{"webhook " + g.webhookScheme + "://" + g.webhookLn.Addr().String()}
	if g.adminLn != nil {
		out = append(out, "admin http://"+g.adminLn.Addr().String())
	}
	if g.brokerSrv != nil {
		for i, addr := range g.brokerSrv.Addrs() {
			scheme := "mqtt"
			if i < len(cfg.Broker.Listeners) {
				l := cfg.Broker.Listeners[i]
				switch {
				case l.Type == "tls":
					scheme = "mqtts"
				case l.Type == "websocket" && l.CertFile != "":
					scheme = "wss"
				case l.Type == "websocket":
					scheme = "ws"
				}
			}
			out = append(out, "broker "+scheme+"://"+addr)
		}
	}
	return out
}

func routePaths(cfg *Config) []string {
	var p []string
	for _, r := range cfg.Webhook.Routes {
		p = append(p, r.Path)
	}
	return p
}

func (g *gateway) newSink(cfg *Config, sc SinkConfig, log zerolog.Logger) (sinks.Sink, error) {
	switch sc.Type {
	case "broker":
		if g.brokerSrv == nil {
			return nil, errors.New("type broker needs broker.enabled")
		}
		bc := brokerSinkConfig(cfg, sc)
		bc.Devices.Directory = g.directory() // device names for state and discovery topics
		return broker.NewSink(g.brokerSrv, bc, log)
	case "subscriber":
		if g.brokerSrv == nil {
			return nil, errors.New("type subscriber needs broker.enabled")
		}
		return broker.NewSubscriber(g.brokerSrv, subscriberConfig(cfg, sc), log)
	case "mqtt":
		mc := mqttConfig(cfg, sc)
		mc.Devices.Directory = g.directory()
		return mqttclient.New(mc, log)
	case "cumulocity":
		c := c8yConfig(cfg, sc)
		// Registered children are remembered in the queue file, so a
		// restart does not register them again.
		c.State = g.queue.KV("cumulocity/" + sc.Name)
		c.Directory = g.directory() // child devices get their Wittra names (nil: "Wittra <id>")
		return cumulocity.New(c, log)
	case "jetstream":
		return jetstream.New(jetstreamConfig(cfg, sc), log)
	default:
		return nil, fmt.Errorf("sink type %q is not supported by this version", sc.Type)
	}
}

func (g *gateway) startWebhook(cfg *Config) error {
	ln, err := net.Listen("tcp", cfg.Webhook.Listen)
	if err != nil {
		return fmt.Errorf("webhook listen: %w", err)
	}
	g.webhookLn = ln
	g.webhookScheme = "http"
	wlog := g.log.With().Str("component", "webhook").Logger()
	g.webhook = &http.Server{
		Handler: g.receiver,
		// Slow clients (slowloris) are cut off: headers within
		// timing.webhookHeaderTimeout, the whole body within ReadTimeout.
		ReadHeaderTimeout: g.timing.webhookHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		// TLS handshake failures from scanners are noise: debug level.
		ErrorLog: stdlog.New(debugWriter{wlog}, "", 0),
	}
	tlsCfg, err := g.webhookTLS(cfg, wlog)
	if err != nil {
		ln.Close()
		return fmt.Errorf("webhook TLS: %w", err)
	}
	if tlsCfg != nil {
		g.webhook.TLSConfig = tlsCfg
		g.webhookScheme = "https"
		g.serve(g.webhook, func() error { return g.webhook.ServeTLS(ln, "", "") })
		return nil
	}
	for _, rt := range cfg.Webhook.Routes {
		if rt.Token != "" {
			g.log.Warn().Str("path", rt.Path).Msg("webhook route has a token but the listener is plain HTTP: the token travels in clear; set webhook.tls or terminate TLS in front")
			break
		}
	}
	g.serve(g.webhook, func() error { return g.webhook.Serve(ln) })
	return nil
}

// debugWriter turns net/http's error log lines into debug events.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (g *gateway) startAdmin(cfg *Config) error {
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	g.adminLn = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := g.readyNow(2 * time.Second); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(newRegistry(g), promhttp.HandlerOpts{}))
	handler, err := adminHandler(cfg, mux)
	if err != nil {
		ln.Close()
		return err
	}
	g.admin = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	if err := g.addStatus(cfg, mux); err != nil {
		ln.Close()
		return fmt.Errorf("status page: %w", err)
	}
	g.warnOpenAdmin(cfg)
	g.serve(g.admin, func() error { return g.admin.Serve(ln) })
	return nil
}

// fail reports a component's fatal error; the first one stops the gateway.
// It never blocks: later ones are only logged, since a sender stuck here
// could never be waited for at shutdown.
func (g *gateway) fail(err error) {
	select {
	case g.fatal <- err:
	default:
		g.log.Error().Err(err).Msg("fatal error while already stopping")
	}
}

func (g *gateway) serve(srv *http.Server, run func() error) {
	g.srvWG.Add(1)
	go func() {
		defer g.srvWG.Done()
		if err := run(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.fail(fmt.Errorf("http server: %w", err))
		}
	}()
}

// close stops intake first, then delivery, then outputs, then the queue, so
// nothing that got a 200 is half-written and nothing is lost.
func (g *gateway) close(ctx context.Context) error {
	g.closeOnce.Do(func() {
		g.ready.Store(false)
		var errs []error
		if g.acmeCancel != nil {
			g.acmeCancel()
		}
		for _, srv := range []*http.Server{g.webhook, g.acmeHTTP, g.admin} {
			if srv == nil {
				continue
			}
			// Shutdown waits for in-flight requests, whose 200 waits for
			// their commit.
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop http: %w", err))
				srv.Close()
			}
		}
		g.srvWG.Wait()
		g.stopNames() // intake has stopped: the last devices seen are final
		if g.fwdCancel != nil {
			g.fwdCancel()
		}
		g.fwdWG.Wait()
		for _, s := range g.sinks {
			if err := s.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("close sink %s: %w", s.Name(), err))
			}
		}
		if g.brokerSrv != nil {
			// mochi v2.7.9 can deadlock in Close when a client disconnects
			// at that moment; the queue must still close cleanly.
			closed := make(chan error, 1)
			go func() { closed <- g.brokerSrv.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					errs = append(errs, fmt.Errorf("close broker: %w", err))
				}
			case <-time.After(3 * time.Second):
				errs = append(errs, errors.New("close broker: timed out after 3 s"))
			case <-ctx.Done():
				errs = append(errs, errors.New("close broker: timed out"))
			}
		}
		if g.queue != nil {
			if err := g.queue.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

// notify tells systemd (Type=notify) about a state change; outside systemd
// it does nothing.
func notify(log zerolog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn().Err(err).Str("state", state).Msg("systemd notify")
	}
}

// watchdog pings systemd's watchdog while the queue's commit path answers,
// so a wedged gateway is restarted. A sink outage is not a reason to restart:
// data waits in the queue.
// readyNow says why the gateway is not ready, or nil: it has started, is
// not stopping, and the queue's commit path answers within timeout.
func (g *gateway) readyNow(timeout time.Duration) error {
	if !g.ready.Load() {
		return errors.New("starting or stopping")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := g.queue.Ping(ctx); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

func (g *gateway) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	clock.Every(ctx.Done(), interval/3, func() {
		pctx, cancel := context.WithTimeout(ctx, interval/3)
		err := g.queue.Ping(pctx)
		cancel()
		if err != nil {
			g.log.Error().Err(err).Msg("queue not answering: withholding the watchdog ping")
			return
		}
		daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	})
}
