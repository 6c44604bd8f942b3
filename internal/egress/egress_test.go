package egress_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/egress"
)

func prefixes(t *testing.T, s ...string) []netip.Prefix {
	t.Helper()
	ps, err := egress.ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestPolicyDecides(t *testing.T) {
	t.Parallel()
	custom, err := egress.New(prefixes(t, "10.0.0.0/8", "127.0.0.2", "0.0.0.0/0"),
		prefixes(t, "10.1.0.0/16", "169.254.0.0/16", "127.0.0.0/8"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		policy *egress.Policy
		addr   string
		denied string // the deciding rule's prefix; "" for allowed
	}{
		{nil, "169.254.169.254", "169.254.0.0/16"},
		{nil, "::ffff:169.254.169.254", "169.254.0.0/16"}, // IPv4-mapped
		{nil, "fd00:ec2::254", "fd00:ec2::254/128"},
		{nil, "fd00:ec2::253", ""},
		{nil, "127.0.0.1", ""},
		{nil, "10.2.3.4", ""},
		{custom, "10.2.3.4", "10.0.0.0/8"},
		{custom, "10.1.3.4", ""},        // the narrower allow wins
		{custom, "169.254.169.254", ""}, // the operator's allow lifts the default
		{custom, "127.0.0.2", "127.0.0.2/32"},
		{custom, "127.0.0.1", ""},
		{custom, "192.0.2.1", "0.0.0.0/0"}, // deny everything, allow some
		{custom, "2001:db8::1", ""},        // no IPv6 rule
	} {
		err := tc.policy.Check("", netip.MustParseAddr(tc.addr), 5432)
		var denied *egress.DeniedError
		switch {
		case tc.denied == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.addr, err)
		case tc.denied != "" && !errors.As(err, &denied):
			t.Errorf("%s: %v, want refused by %s", tc.addr, err, tc.denied)
		case tc.denied != "" && denied.Rule.Prefix.String() != tc.denied:
			t.Errorf("%s: refused by %s, want %s", tc.addr, denied.Rule.Prefix, tc.denied)
		}
	}
}

func TestParseAndConflicts(t *testing.T) {
	t.Parallel()
	if _, err := egress.ParsePrefixes([]string{"10.0.0.0/8", "fd00::1", " 192.168.1.7/24 "}); err != nil {
		t.Errorf("valid prefixes refused: %v", err)
	}
	p, _ := egress.ParsePrefix("192.168.1.7/24")
	if p.String() != "192.168.1.0/24" {
		t.Errorf("ParsePrefix masks to %s", p)
	}
	_, err := egress.ParsePrefixes([]string{"10.0.0.0/33", "db.example.com", "fe80::1%eth0/64"})
	for _, s := range []string{`"10.0.0.0/33"`, `"db.example.com"`, `"fe80::1%eth0/64"`, "CIDR notation, such as 10.0.0.0/8"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v lacks %q", err, s)
		}
	}
	if _, err := egress.New(prefixes(t, "10.0.0.0/8"), prefixes(t, "10.1.2.3/8")); err == nil ||
		!strings.Contains(err.Error(), "10.0.0.0/8 is given to both") {
		t.Errorf("a prefix denied and allowed: %v", err)
	}
}

// TestDialRefusedBeforeConnecting dials through the policy: a denied
// loopback address is refused while another works, and the default denial
// of the metadata address refuses before any packet is sent: the dialer's
// Control hook runs before connect(2), and the refusal is immediate even
// though nothing answers there.
func TestDialRefusedBeforeConnecting(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	policy, err := egress.New(prefixes(t, "127.0.0.2/32"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := policy.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("allowed address refused: %v", err)
	}
	_ = c.Close()

	ln2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln2.Accept(); err == nil {
			accepted <- struct{}{}
			_ = c.Close()
		}
	}()
	_, err = policy.DialContext(ctx, "tcp", ln2.Addr().String())
	var denied *egress.DeniedError
	if !errors.As(err, &denied) || denied.Addr.String() != "127.0.0.2" || denied.Rule.Default {
		t.Fatalf("dial 127.0.0.2 = %v, want refused by --deny-network 127.0.0.2/32", err)
	}
	for _, s := range []string{ln2.Addr().String(), "127.0.0.2/32", "--deny-network 127.0.0.2/32", "PGRELAY_DENY_NETWORK"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	// The listener saw nothing: the refusal came before connect(2).
	_ = ln2.Close()
	select {
	case <-accepted:
		t.Error("the denied address received a connection")
	default:
	}

	start := time.Now()
	_, err = (*egress.Policy)(nil).DialContext(ctx, "tcp", "169.254.169.254:80")
	if !errors.As(err, &denied) || !denied.Rule.Default || denied.Addr.String() != "169.254.169.254" {
		t.Fatalf("dial metadata = %v, want refused by the default denial", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v: it should not wait for the network", d)
	}
	for _, s := range []string{"169.254.169.254:80", "169.254.0.0/16", "--allow-network 169.254.0.0/16", "nothing was sent"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	// A name is reported with the address it resolved to.
	_, err = policy.DialContext(ctx, "tcp", "localhost:1")
	if errors.As(err, &denied) {
		t.Errorf("localhost (127.0.0.1) refused: %v", err)
	}
}
