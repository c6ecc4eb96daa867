//go:build !linux

package buffer

func dontNeed(addr, length uintptr) {}
