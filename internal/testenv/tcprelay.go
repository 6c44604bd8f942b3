package testenv

import (
	"io"
	"net"
	"testing"
)

// TCPRelay forwards every connection to listenHost (on a port it picks)
// to target, both ways, until the test ends, and returns the port. Tests
// use it to reach a server at another loopback address (e.g. 127.0.0.2,
// for a network policy) than the one it listens on.
func TCPRelay(tb testing.TB, listenHost, target string) int {
	tb.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(listenHost, "0"))
	if err != nil {
		tb.Fatalf("testenv: relay: listen on %s: %v", listenHost, err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
