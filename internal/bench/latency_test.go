package bench

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection until the client half-closes, then
// closes it.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	return ln.Addr().String()
}

// TestLatencyRelay checks that the relay passes bytes intact both ways,
// delivers none before the delay in each direction, passes a half-close
// on, and counts the client's flights.
func TestLatencyRelay(t *testing.T) {
	const delay = 40 * time.Millisecond
	r, err := NewLatencyRelay(echoServer(t), delay)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	for i := range 2 {
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		// Through the relay to the echo server and back: two delays.
		if got := time.Since(start); got < 2*delay {
			t.Errorf("round trip %d took %v, less than 2 × %v", i+1, got, delay)
		}
		if string(buf) != "ping" {
			t.Fatalf("echo = %q", buf)
		}
	}
	if got := r.Stats().Flights; got != 2 {
		t.Errorf("flights after two round trips = %d, want 2", got)
	}

	// Bulk data passes intact, in order, in both directions.
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	echoed := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c) // until the server closes after our half-close
		echoed <- b
	}()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-echoed:
		if !bytes.Equal(got, data) {
			t.Errorf("echoed %d bytes, want the %d sent, in order", len(got), len(data))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no end of stream: the half-close was not passed on")
	}
	st := r.Stats()
	if want := int64(len(data) + 8); st.BytesUp != want || st.BytesDown != want {
		t.Errorf("bytes up, down = %d, %d; want %d each", st.BytesUp, st.BytesDown, want)
	}
	if st.Connections != 1 {
		t.Errorf("connections = %d, want 1", st.Connections)
	}
}

// TestLatencyRelayDelaysEachDirection checks that data one way only is
// delayed too: a server that speaks first is heard one delay later.
func TestLatencyRelayDelaysEachDirection(t *testing.T) {
	const delay = 30 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := make(chan time.Time, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		sent <- time.Now()
		_, _ = s.Write([]byte("hello"))
		_, _ = io.Copy(io.Discard, s)
	}()
	r, err := NewLatencyRelay(ln.Addr().String(), delay)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if got := at.Sub(<-sent); got < delay {
		t.Errorf("the server's greeting arrived %v after it was sent, less than the delay %v", got, delay)
	}
	if got := r.Stats().Flights; got != 0 {
		t.Errorf("flights = %d before the client sent anything, want 0", got)
	}
	if _, err := NewLatencyRelay(ln.Addr().String(), -time.Second); err == nil {
		t.Error("a negative delay was accepted")
	}
}
