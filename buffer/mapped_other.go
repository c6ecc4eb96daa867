//go:build !linux

package buffer

import (
	"errors"
	"os"
)

func dontNeed(addr, length uintptr) {}

// mapReadOnly is not used here: the check reads page by page.
func mapReadOnly(*os.File, int64) ([]byte, error) { return nil, nil }

func unmap([]byte) error { return nil }

// mapAnon is not available here: the dedup table lives on the Go heap.
func mapAnon(int) ([]byte, error) { return nil, errors.ErrUnsupported }
