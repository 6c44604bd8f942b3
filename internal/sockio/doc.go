// Package sockio reads and writes TCP sockets on a relay's data path
// without the Go scheduler's system-call bookkeeping.
//
// A Go program whose goroutines all wait (a proxy between two round
// trips) lets its system monitor thread sleep until the next system call
// starts, which then wakes it with a futex; the monitor then polls every
// 20 µs until the program is idle again. A proxy that relays a query and
// its reply wakes from idle twice per round trip, so most of its CPU time
// went to waking and putting to sleep that thread: on a 2-core VM, 73 µs
// of CPU per `pgbench -S` transaction, against ssh's 39 µs.
//
// A socket in Go is non-blocking: a read or write either moves data at
// once or reports EAGAIN, and waiting is the netpoller's job. Wrap's
// connections make those reads and writes with syscall.RawSyscall inside
// syscall.RawConn's Read and Write (which wait through the netpoller, with
// the connection's deadlines), so they do not enter the scheduler's
// system-call state and the monitor is left asleep; anything else the
// process does (files, DNS, blocking calls) still wakes it as before.
package sockio
