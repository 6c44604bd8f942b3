package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// hangGuard bounds a wait that must end by itself; it is far above any
// expected time and only turns a hang into a failure.
const hangGuard = 30 * time.Second

// startSink runs a TCP server on loopback that accepts connections and
// never reads them, so that writes to it eventually block.
func startSink(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func dialTarget(t *testing.T, tun *tunnel.Tunnel, addr string) net.Conn {
	t.Helper()
	c, err := tun.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("DialContext(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestWriteToAndReadFrom copies through an echo server with the
// connection's own WriteTo and ReadFrom, as io.Copy and the proxy do.
func TestWriteToAndReadFrom(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	c := dialTarget(t, tun, echo)
	if _, ok := c.(io.WriterTo); !ok {
		t.Fatal("connection is not an io.WriterTo")
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Fatal("connection is not an io.ReaderFrom")
	}

	// Large enough for many packets and window adjustments; both copies
	// run at once, as in a proxy.
	msg := strings.Repeat("0123456789abcdef", 300000) // 4.8 MB
	sent := make(chan error, 1)
	go func() {
		n, err := c.(io.ReaderFrom).ReadFrom(strings.NewReader(msg))
		if err == nil && n != int64(len(msg)) {
			err = errors.New("short ReadFrom")
		}
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		sent <- err
	}()
	var got bytes.Buffer
	n, err := c.(io.WriterTo).WriteTo(&got)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	if n != int64(len(msg)) || got.String() != msg {
		t.Fatalf("WriteTo copied %d bytes (buffer %d), want %d equal bytes", n, got.Len(), len(msg))
	}
	// The end of stream stays: Read and a second WriteTo see it.
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read after WriteTo reached EOF = %v, want io.EOF", err)
	}
	if n, err := c.(io.WriterTo).WriteTo(io.Discard); n != 0 || err != nil {
		t.Errorf("second WriteTo = %d, %v; want 0, nil", n, err)
	}
}

// TestWriteToAfterRead checks that WriteTo continues where Read stopped,
// and then copies by itself: the pump behind Read is stopped.
func TestWriteToAfterRead(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	c := dialTarget(t, tun, echo)

	msg := strings.Repeat("pgrelay ", 50000)
	go func() {
		_, _ = io.WriteString(c, msg)
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatalf("Read: %v", err)
	}
	var rest bytes.Buffer
	if _, err := c.(io.WriterTo).WriteTo(&rest); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if string(head)+rest.String() != msg {
		t.Fatalf("Read then WriteTo returned %d bytes, not the %d sent", len(head)+rest.Len(), len(msg))
	}
}

// TestWriteToTakesOverFromIdlePump starts WriteTo while the pump behind
// Read waits for data (as after a relay read a protocol's start): the
// data that then arrives is all copied, in order, and the copy no longer
// goes through the pump.
func TestWriteToTakesOverFromIdlePump(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	c := dialTarget(t, tun, echo)

	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 5)
	if _, err := io.ReadFull(c, head); err != nil || string(head) != "hello" {
		t.Fatalf("Read = %q, %v", head, err)
	}
	if !tunnel.Pumping(c) {
		t.Fatal("Read did not start the pump")
	}
	// The pump now waits in the channel's Read.
	var rest bytes.Buffer
	msg := strings.Repeat("0123456789abcdef", 100000)
	done := writeToRunning(t, c, &rest, msg)
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, done, "WriteTo did not end at EOF"); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if rest.String() != msg {
		t.Fatalf("WriteTo copied %d bytes, want the %d sent, in order", rest.Len(), len(msg))
	}
	if tunnel.Pumping(c) {
		t.Error("WriteTo copied through the pump; it should take over the channel")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestWriteToReleasedByCloseWhenFrozen checks that Close ends a WriteTo
// even when the bastion has stopped answering, so that a proxy can close
// its sessions without waiting for the tunnel to drop.
func TestWriteToReleasedByCloseWhenFrozen(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	fp := testenv.StartFaultProxy(t, b.bastion.Addr())
	cfg := b.cfg
	cfg.Addr = fp.Addr()
	tun := dial(t, cfg) // default keepalive: 30 s × 10, far beyond the guard
	c := dialTarget(t, tun, echo)

	done := writeToRunning(t, c, io.Discard, "ping") // WriteTo is waiting for more
	fp.Freeze()
	t.Cleanup(fp.Thaw)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := ended(t, done, "WriteTo still running after Close with the bastion frozen"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close = %v, want net.ErrClosed", err)
	}
	if tun.Err() != nil {
		t.Errorf("tunnel dropped: %v", tun.Err())
	}
}

// TestWriteToDeadlines: a read deadline set before WriteTo is obeyed and
// leaves the connection usable; one that passes during a WriteTo ends it
// with a time-out and closes the channel.
func TestWriteToDeadlines(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	c := dialTarget(t, tun, echo)

	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.(io.WriterTo).WriteTo(io.Discard); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteTo past a deadline set before = %v, want a time-out", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatalf("Write after the deadline: %v", err)
	}
	got := make([]byte, len("still here"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "still here" {
		t.Fatalf("echo after a WriteTo deadline = %q, %v", got, err)
	}

	c2 := dialTarget(t, tun, echo)
	done := writeToRunning(t, c2, io.Discard, "ping") // WriteTo is running, and began without a deadline
	_ = c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := ended(t, done, "a deadline did not end WriteTo"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("WriteTo interrupted by a deadline = %v, want a time-out", err)
	}
	_ = c2.SetReadDeadline(time.Time{})
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read after an interrupted WriteTo = %v, want a time-out", err)
	}
	if tun.Err() != nil {
		t.Errorf("tunnel dropped: %v", tun.Err())
	}
}

// firstWrite discards what is written and closes seen at the first write.
// writeToRunning starts c's WriteTo into dst, writes first to c (the echo
// target sends it back) and returns once WriteTo has passed some of it on,
// so that it now waits for more. The channel gets WriteTo's error.
func writeToRunning(t *testing.T, c net.Conn, dst io.Writer, first string) <-chan error {
	t.Helper()
	w := &firstWrite{seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := c.(io.WriterTo).WriteTo(writerFunc(func(p []byte) (int, error) {
			_, _ = dst.Write(p)
			return w.Write(p)
		}))
		done <- err
	}()
	if _, err := io.WriteString(c, first); err != nil {
		t.Fatalf("Write: %v", err)
	}
	<-w.seen
	return done
}

// ended returns the error from done, failing the test with hung if none
// comes within hangGuard.
func ended(t *testing.T, done <-chan error, hung string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(hangGuard):
		t.Fatal(hung)
		return nil
	}
}

type firstWrite struct {
	once sync.Once
	seen chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.seen) })
	return len(p), nil
}

// TestBlockedWriteReleased fills a channel whose target never reads,
// with small writes (made directly on the caller's goroutine) and with
// large ones (made by the writer goroutine), and checks that a deadline
// or Close releases the blocked writer with the right error while the
// tunnel stays up.
func TestBlockedWriteReleased(t *testing.T) {
	t.Parallel()
	sink := startSink(t)
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)

	for _, tc := range []struct {
		name    string
		size    int
		byClose bool
		want    error
	}{
		{"small by deadline", 1 << 10, false, os.ErrDeadlineExceeded},
		{"large by deadline", 256 << 10, false, os.ErrDeadlineExceeded},
		{"small by close", 1 << 10, true, net.ErrClosed},
		{"large by close", 256 << 10, true, net.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTarget(t, tun, sink)
			var written atomic.Int64
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, tc.size)
				for {
					n, err := c.Write(buf)
					written.Add(int64(n))
					if err != nil {
						done <- err
						return
					}
				}
			}()
			// Wait until the writes stop making progress: the bastion's
			// window and the sockets are full. (Releasing earlier would
			// test the same paths less often, not fail.)
			last := int64(-1)
			for written.Load() != last {
				last = written.Load()
				time.Sleep(200 * time.Millisecond)
			}
			if tc.byClose {
				_ = c.Close()
			} else {
				_ = c.SetWriteDeadline(time.Now())
			}
			if err := ended(t, done, "blocked Write not released"); !errors.Is(err, tc.want) {
				t.Errorf("blocked Write released with %v, want %v", err, tc.want)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, tc.want) {
				t.Errorf("next Write = %v, want %v", err, tc.want)
			}
		})
	}
	if tun.Err() != nil {
		t.Fatalf("tunnel dropped: %v", tun.Err())
	}
	// The tunnel still carries other channels.
	c := dialTarget(t, tun, echo)
	if _, err := c.Write([]byte("ok")); err != nil {
		t.Fatalf("Write on a new channel: %v", err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ok" {
		t.Fatalf("echo on a new channel = %q, %v", got, err)
	}
}

// slowFirstWriter holds its first Write until the bytes it was handed
// change under it or a second passes, then keeps what it holds by then.
type slowFirstWriter struct {
	got     bytes.Buffer
	first   bool
	changed bool
}

func (w *slowFirstWriter) Write(p []byte) (int, error) {
	if !w.first {
		w.first = true
		snap := bytes.Clone(p)
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if !bytes.Equal(p, snap) {
				w.changed = true
				break
			}
		}
	}
	w.got.Write(p)
	return len(p), nil
}

// TestWriteToAfterReadKeepsReadsBuffer: WriteTo first writes what Read
// left, which lies in the pump's buffer; that buffer must not go back to
// the pump (which reads the next data into it) before the write is done.
// A slow first write saw its bytes overwritten by data arriving meanwhile
// (found by the race detector).
func TestWriteToAfterReadKeepsReadsBuffer(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	c := dialTarget(t, tun, echo)

	first, more := strings.Repeat("a", 3000), strings.Repeat("b", 100000)
	if _, err := io.WriteString(c, first); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1000)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatalf("Read: %v", err)
	}
	// More data arrives while WriteTo's first write is held.
	go func() {
		_, _ = io.WriteString(c, more)
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	w := &slowFirstWriter{}
	if _, err := c.(io.WriterTo).WriteTo(w); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if w.changed {
		t.Error("the bytes of WriteTo's first write changed while it wrote them")
	}
	if got := string(head) + w.got.String(); got != first+more {
		t.Fatalf("Read then WriteTo returned %d bytes, not the %d sent, in order", len(got), len(first+more))
	}
}
