package e2etest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Resources are counts a server exposes on /metrics that grow when it
// leaks: goroutines, open file descriptors and open SSH tunnels.
type Resources struct {
	// Goroutines is go_goroutines.
	Goroutines int
	// OpenFDs is process_open_fds.
	OpenFDs int
	// Tunnels is pgrelay_tunnels_open.
	Tunnels int
}

// String formats the counts for messages.
func (r Resources) String() string {
	return fmt.Sprintf("%d goroutines, %d open fds, %d tunnels", r.Goroutines, r.OpenFDs, r.Tunnels)
}

// Metrics reads the server's /metrics and returns every sample without
// labels, by name. Each call uses a connection of its own that is closed
// afterwards, so that reading does not leave a keep-alive connection (a
// file descriptor and a goroutine) in the server.
func (s *Server) Metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Close = true
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read metrics of server %s: %w", s.name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read metrics of server %s: %w", s.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read metrics of server %s: %s", s.name, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// Resources reads go_goroutines, process_open_fds and pgrelay_tunnels_open
// from /metrics, after closing the idle connections of this server's
// clients (see CloseIdleConnections).
func (s *Server) Resources(ctx context.Context) (Resources, error) {
	s.CloseIdleConnections()
	m, err := s.Metrics(ctx)
	if err != nil {
		return Resources{}, err
	}
	for _, name := range []string{"go_goroutines", "process_open_fds", "pgrelay_tunnels_open"} {
		if _, ok := m[name]; !ok {
			return Resources{}, fmt.Errorf("metrics of server %s lack %s", s.name, name)
		}
	}
	return Resources{Goroutines: int(m["go_goroutines"]), OpenFDs: int(m["process_open_fds"]),
		Tunnels: int(m["pgrelay_tunnels_open"])}, nil
}

// OpenFiles lists what the server's open file descriptors point at, read
// from /proc (sockets as "socket:[inode]", files by path), for messages
// that explain a leak. It needs the same user as the server, or root.
func (s *Server) OpenFiles() ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", s.Pid())
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list open files of server %s: %w", s.name, err)
	}
	var out []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		out = append(out, e.Name()+" -> "+target)
	}
	return out, nil
}
