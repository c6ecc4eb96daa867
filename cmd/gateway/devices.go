package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/status"
	"wittra-gateway/wittra"
	"wittra-gateway/wittraapi"
)

// DevicesCommand lists the devices seen: id, Wittra name and type, project,
// last seen, latest values. It reads the queue file (the devices seen are
// saved there every 30 s and at stop; names are the Wittra API's last good
// answer). While a gateway runs it holds the file, so the command asks that
// gateway's admin listener instead (/api/status: values of each device's
// latest message).
type DevicesCommand struct {
	Stdout, Stderr io.Writer
	now            func() time.Time // tests; time.Now when nil
}

// deviceRow is one device as the command prints it.
type deviceRow struct {
	Project    string            `json:"project"` // as Wittra spells it
	ID         string            `json:"id"`
	Name       string            `json:"name"` // "" when the Wittra API gave none
	Type       string            `json:"type"`
	Kind       string            `json:"kind"` // of the latest message: data | event
	LastSeen   time.Time         `json:"last_seen"`
	MeasuredAt *time.Time        `json:"measured_at,omitempty"`
	Values     map[string]string `json:"values"` // latest value of each key
}

func (c *DevicesCommand) Run(ctx context.Context, args []string) error {
	var path string
	var asJSON bool
	fs := newFlagSet("devices", c.Stderr, &path)
	fs.BoolVar(&asJSON, "json", false, "print a JSON array instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadQueueConfig(path)
	if err != nil {
		return usageError{err}
	}
	rows, source, err := c.fromFile(cfg)
	if errors.Is(err, buffer.ErrLocked) {
		if cfg.Admin.Listen == "" {
			return fmt.Errorf("%w; its admin listener is off (admin.listen), so the devices cannot be asked for either: stop the gateway, or enable admin.listen", err)
		}
		rows, err = c.fromGateway(ctx, cfg)
		source = "running gateway (admin " + cfg.Admin.Listen + ")"
	}
	if err != nil {
		return err
	}
	out := bufio.NewWriter(c.Stdout)
	defer out.Flush()
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	return c.table(out, rows, source)
}

// fromFile reads the queue file (shared lock: fails with ErrLocked while a
// gateway runs).
func (c *DevicesCommand) fromFile(cfg *Config) ([]deviceRow, string, error) {
	if _, err := os.Stat(cfg.Buffer.Path); errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("no queue file at %s: the gateway has not run with this config yet", cfg.Buffer.Path)
	}
	q, err := buffer.OpenReadOnly(cfg.Buffer.Path, time.Second, zerolog.New(c.Stderr))
	if err != nil {
		return nil, "", err
	}
	defer q.Close()
	ds, err := bridge.OpenDeviceStore(q.KV(kvDevicesSeen), nil, 0)
	if err != nil {
		return nil, "", err
	}
	names, err := wittraapi.Load(q.KV(kvWittraAPI))
	if err != nil {
		return nil, "", fmt.Errorf("read the Wittra API device lists: %w", err)
	}
	var rows []deviceRow
	for _, d := range ds.Devices() {
		info, _ := names.Device(d.Project, d.ID)
		r := deviceRow{Project: wittra.UnescapeID(d.Project), ID: wittra.UnescapeID(d.ID), Name: info.Name, Type: info.Type,
			Kind: d.Kind, LastSeen: d.LastSeen, MeasuredAt: d.MeasuredAt, Values: map[string]string{}}
		for _, v := range d.Values {
			r.Values[v.Path] = v.Value
		}
		rows = append(rows, r)
	}
	return rows, "queue file " + cfg.Buffer.Path, nil
}

// fromGateway asks the running gateway's status API.
func (c *DevicesCommand) fromGateway(ctx context.Context, cfg *Config) ([]deviceRow, error) {
	host, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %q: %w", cfg.Admin.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/api/status?devices=-1"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the queue file is in use by a running gateway, and asking it failed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, errors.New("the queue file is in use by a running gateway whose admin listener needs a login (admin.users): open its status page, or stop it")
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the queue file is in use by a running gateway; %s answered %s", url, resp.Status)
	}
	var rep struct {
		Devices status.Devices `json:"devices"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&rep); err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	var rows []deviceRow
	for _, d := range rep.Devices.Items {
		r := deviceRow{Project: wittra.UnescapeID(d.Project), ID: wittra.UnescapeID(d.ID), Name: d.Name, Type: d.Type,
			Kind: d.Kind, LastSeen: d.LastSeen.UTC(), MeasuredAt: d.MeasuredAt, Values: map[string]string{}}
		for _, v := range d.Values {
			r.Values[v.Path] = v.Value
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (c *DevicesCommand) table(w io.Writer, rows []deviceRow, source string) error {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	fmt.Fprintf(w, "devices seen: %d (from the %s)\n\n", len(rows), source)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tPROJECT\tLAST SEEN\tVALUES")
	for _, r := range rows {
		keys := make([]string, 0, len(r.Values))
		for k := range r.Values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		vals := make([]string, len(keys))
		for i, k := range keys {
			vals[i] = k + "=" + r.Values[k]
		}
		ago := now().Sub(r.LastSeen).Round(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s (%s ago)\t%s\n", r.ID, dash(r.Name), dash(r.Type), r.Project,
			r.LastSeen.UTC().Format(time.DateTime), ago, strings.Join(vals, " "))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
