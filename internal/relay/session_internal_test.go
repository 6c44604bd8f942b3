package relay

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// chunkConn is a net.Conn whose reads return the chunks given, then EOF.
type chunkConn struct {
	net.Conn
	chunks [][]byte
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// TestTerminateSeenAcrossReads checks the tail kept by clientConn
// whatever the reads' sizes: a Terminate split over several reads is
// seen, and one followed by anything else is not.
func TestTerminateSeenAcrossReads(t *testing.T) {
	term, _ := (&pgproto3.Terminate{}).Encode(nil)
	query, _ := (&pgproto3.Query{String: "select 1"}).Encode(nil)
	sync, _ := (&pgproto3.Sync{}).Encode(nil)
	stream := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"query then terminate", stream(query, term), true},
		{"terminate alone", term, true},
		{"query only", query, false},
		{"sync", stream(query, sync), false},
		{"terminate then more", stream(term, query), false},
		{"nothing", nil, false},
	} {
		// Every way of cutting the stream into reads of 1..len bytes.
		for size := 1; size <= max(len(tc.data), 1); size++ {
			var chunks [][]byte
			for rest := tc.data; len(rest) > 0; {
				n := min(size, len(rest))
				chunks = append(chunks, bytes.Clone(rest[:n]))
				rest = rest[n:]
			}
			c := &clientConn{Conn: &chunkConn{chunks: chunks}, terminate: term}
			buf := make([]byte, 3) // smaller than some chunks: reads split them further
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			readErr, _, got := c.state()
			if got != tc.want || readErr != io.EOF {
				t.Errorf("%s in reads of %d: terminated = %v (read error %v), want %v", tc.name, size, got, readErr, tc.want)
			}
		}
	}
}

// BenchmarkClientConnRead measures what keeping the tail costs per read
// of a copy buffer's size, against reading directly.
func BenchmarkClientConnRead(b *testing.B) {
	data := make([]byte, 32<<10)
	src := &loopConn{data: data}
	buf := make([]byte, len(data))
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, _ = src.Read(buf)
		}
	})
	b.Run("client_conn", func(b *testing.B) {
		term, _ := (&pgproto3.Terminate{}).Encode(nil)
		c := &clientConn{Conn: src, terminate: term}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, _ = c.Read(buf)
		}
	})
}

// loopConn returns the same data on every read, copied as a socket read
// would.
type loopConn struct {
	net.Conn
	data []byte
}

func (c *loopConn) Read(p []byte) (int, error) { return copy(p, c.data), nil }
