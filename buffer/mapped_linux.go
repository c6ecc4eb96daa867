package buffer

import "syscall"

func dontNeed(addr, length uintptr) {
	syscall.Syscall(syscall.SYS_MADVISE, addr, length, syscall.MADV_DONTNEED)
}
