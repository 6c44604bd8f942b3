package sockio_test

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/pgrelay/pgrelay/internal/sockio"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		t.Fatal(r.err)
	}
	return a, r.c
}

// wrappedPair is tcpPair with both ends wrapped.
func wrappedPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	a, b = tcpPair(t)
	a, b = sockio.Wrap(a), sockio.Wrap(b)
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// TestConnConformance runs x/net's net.Conn conformance tests (basic I/O,
// concurrent reads and writes, deadlines in the past, present and future,
// Close unblocking a pending Read) on a wrapped loopback TCP connection.
func TestConnConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		a, b := tcpPair(t)
		c1, c2 = sockio.Wrap(a), sockio.Wrap(b)
		if runtime.GOOS == "linux" && (c1 == a || c2 == b) {
			return nil, nil, nil, errors.New("Wrap returned the TCP connection itself on Linux")
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := sockio.Wrap(p1); got != p1 || sockio.Direct(got) {
		t.Fatalf("Wrap(net.Pipe end) = %T, want the conn itself", got)
	}
	a, _ := wrappedPair(t)
	if got := sockio.Wrap(a); got != a {
		t.Fatalf("Wrap of a wrapped conn = %T, want it as it is", got)
	}
	if want := runtime.GOOS == "linux"; sockio.Direct(a) != want {
		t.Fatalf("Direct(Wrap(TCP conn)) = %v, want %v on %s", !want, want, runtime.GOOS)
	}
}

func TestEOFAndHalfClose(t *testing.T) {
	a, b := wrappedPair(t)
	cw, ok := a.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", a)
	}
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("ReadAll after CloseWrite = %q, %v; want the data, then EOF", got, err)
	}
	// The other direction still works after the half-close.
	if _, err := b.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "reply" {
		t.Fatalf("read after half-close = %q, %v", buf, err)
	}
}

// TestLargeWrite writes more than the socket buffers hold, so that Write
// waits for room several times.
func TestLargeWrite(t *testing.T) {
	a, b := wrappedPair(t)
	want := make([]byte, 32<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		n, err := a.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		errc <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("byte %d = %d, want %d", i, got[i], want[i])
		}
	}
}

// TestWriteToClosedPeer: writing to a connection the peer has closed
// fails with an error (EPIPE or ECONNRESET) instead of killing the
// process with SIGPIPE.
func TestWriteToClosedPeer(t *testing.T) {
	a, b := wrappedPair(t)
	b.Close()
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := a.Write(buf)
		if err != nil {
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "write" {
				t.Fatalf("Write error = %#v, want a *net.OpError of op write", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a closed peer kept succeeding")
		}
	}
}

func TestErrorsAsTheNetPackageGivesThem(t *testing.T) {
	a, _ := wrappedPair(t)
	if err := a.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := a.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v, want a time-out", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Addr == nil {
		t.Fatalf("Read past the deadline = %#v, want a *net.OpError of op read with the address", err)
	}
	a.Close()
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}
