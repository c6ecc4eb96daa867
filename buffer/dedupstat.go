package buffer

// DedupKeys is the number of payloadIds the dedup window remembers (keys
// whose record the sweep has not removed yet included), as of the last
// commit. It reads a counter: cheap enough for every metrics scrape.
func (q *Queue) DedupKeys() (int, error) {
	if q.dx == nil { // OpenReadOnly builds no index
		return 0, ErrReadOnly
	}
	return int(q.dx.count.Load()), nil
}
