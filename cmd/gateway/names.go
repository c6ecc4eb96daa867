package main

// Device names: the devices seen (kept in the queue file, read by the
// `devices` command) and, with a `wittra_api:` section, the names and types
// from the Wittra REST API, which sinks get as a sinks.Directory.

import (
	"context"
	"sync"

	"wittra-gateway/bridge"
	"wittra-gateway/sinks"
	"wittra-gateway/wittraapi"
)

// KV namespaces in the queue file.
const (
	kvDevicesSeen = "devices_seen" // bridge.DeviceStore
	kvWittraAPI   = "wittra_api"   // wittraapi.Client's last good lists
)

// names holds the device-name components of a running gateway.
type names struct {
	seen   *bridge.DeviceStore
	api    *wittraapi.Client // nil without wittra_api
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// openNames opens the devices-seen store and builds the API client (no
// network yet), before the sinks, which take the Directory.
func (g *gateway) openNames(cfg *Config) error {
	n := &names{}
	var err error
	n.seen, err = bridge.OpenDeviceStore(g.queue.KV(kvDevicesSeen), g.seenDevices, 0)
	if err != nil {
		return err
	}
	if w := cfg.WittraAPI; w != nil {
		wc := wittraConfig(w)
		wc.SeenProjects, wc.Store = n.seen.Projects, g.queue.KV(kvWittraAPI)
		wc.UserAgent, wc.NewProjectPoll = "wittra-gateway/"+Version, g.timing.wittraNewProjectPoll
		n.api, err = wittraapi.New(*wc, g.log)
		if err != nil {
			return err
		}
	}
	g.names = n
	return nil
}

// seenDevices is the receiver's table (empty before the receiver exists).
func (g *gateway) seenDevices() []bridge.SeenDevice {
	if g.receiver == nil {
		return nil
	}
	return g.receiver.Devices()
}

// directory is what sinks get: nil without wittra_api (no names known).
func (g *gateway) directory() sinks.Directory {
	if g.names == nil || g.names.api == nil {
		return nil
	}
	return g.names.api
}

// deviceInfo is what the API says of a device (zero when unknown).
func (g *gateway) deviceInfo(project, device string) sinks.DeviceInfo {
	if d := g.directory(); d != nil {
		info, _ := d.Device(project, device)
		return info
	}
	return sinks.DeviceInfo{}
}

// runNames starts saving the devices seen and refreshing names; called
// once the receiver exists.
func (g *gateway) runNames() {
	n := g.names
	if n == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.seen.Run(ctx, g.timing.devicesSaveEvery, func(err error) {
			g.log.Warn().Err(err).Msg("cannot save the devices seen; retried")
		})
	}()
	if n.api != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.api.Run(ctx)
		}()
	}
}

// stopNames stops both loops; the devices seen are saved a last time.
// Called after intake stopped and before the queue closes.
func (g *gateway) stopNames() {
	if n := g.names; n != nil && n.cancel != nil {
		n.cancel()
		n.wg.Wait()
	}
}
