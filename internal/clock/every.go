package clock

import "time"

// Every calls f every interval until stop closes (a ctx.Done() will do):
// the periodic loops of the components (sweeps, samples, checks). A tick
// missed while f runs is dropped, as time.Ticker does.
func Every(stop <-chan struct{}, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}
