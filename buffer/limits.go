package buffer

// MaxBytes is the bound on stored bytes the queue enforces (0: none), for
// the "queue near full" alert.
func (q *Queue) MaxBytes() int64 { return q.cfg.MaxBytes }
