package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram in microseconds: exact below
// 256 µs, then 128 buckets per power of two (under 0.8 % error). Fixed size,
// so recording costs no allocation and memory does not grow with the run.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // µs
	max    uint64 // µs
}

const histBuckets = 256 + 56*128

func histIndex(v uint64) int {
	if v < 256 {
		return int(v)
	}
	shift := bits.Len64(v) - 8 // ≥ 1
	mant := v >> uint(shift)   // 128..255
	return 256 + (shift-1)*128 + int(mant-128)
}

// histValue is the middle of bucket i.
func histValue(i int) uint64 {
	if i < 256 {
		return uint64(i)
	}
	shift := (i-256)/128 + 1
	mant := uint64((i-256)%128 + 128)
	return mant<<uint(shift) + (uint64(1)<<uint(shift))/2
}

func (h *hist) add(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[histIndex(us)]++
	h.n++
	h.sum += us
	h.max = max(h.max, us)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in µs (the exact max for q = 1).
func (h *hist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(1, min(rank, h.n))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(histValue(i), h.max)
		}
	}
	return h.max
}

// Latency summarises a histogram in milliseconds.
type Latency struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func (h *hist) summary() Latency {
	ms := func(us uint64) float64 { return float64(us) / 1000 }
	l := Latency{Count: h.n, MaxMs: ms(h.max)}
	if h.n > 0 {
		l.MeanMs = float64(h.sum) / float64(h.n) / 1000
		l.P50Ms = ms(h.quantile(0.50))
		l.P90Ms = ms(h.quantile(0.90))
		l.P99Ms = ms(h.quantile(0.99))
		l.P999Ms = ms(h.quantile(0.999))
	}
	return l
}

// bitset is a fixed-size set of sequence numbers, safe for concurrent use.
type bitset []atomic.Uint64

func newBitset(n uint64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) size() uint64 { return uint64(len(b)) * 64 }

// set adds i and reports whether it was already there.
func (b bitset) set(i uint64) (was bool) {
	w, m := i/64, uint64(1)<<(i%64)
	return b[w].Or(m)&m != 0
}

// count returns |b|, |b \ o| and |o \ b|.
func (b bitset) diff(o bitset) (inB, onlyB, onlyO uint64) {
	for i := range b {
		x, y := b[i].Load(), o[i].Load()
		inB += uint64(bits.OnesCount64(x))
		onlyB += uint64(bits.OnesCount64(x &^ y))
		onlyO += uint64(bits.OnesCount64(y &^ x))
	}
	return
}
