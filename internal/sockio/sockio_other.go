//go:build !linux

package sockio

import "net"

// Wrap returns c: direct reads and writes are made on Linux only.
func Wrap(c net.Conn) net.Conn { return c }

// Direct reports whether c reads and writes directly: never off Linux.
func Direct(c net.Conn) bool { return false }
