//go:build !linux

package bench

// setQuickAck does nothing where TCP_QUICKACK does not exist.
func setQuickAck(uintptr) {}
