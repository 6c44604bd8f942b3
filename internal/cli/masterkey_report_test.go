package cli_test

import (
	"strings"
	"testing"
)

// TestMasterKeyRotateReportsEveryKey: the text `master-key rotate` prints
// counts every secret it sealed again, the own key pairs of SSH hops and the
// SSH CA's key included (as -o json does), not only the connections' own
// passwords and key pairs.
func TestMasterKeyRotateReportsEveryKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "pw"
	h.ok("connection", "create", "hops", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "DB_PASSWORD",
		"--ssh-hop", "jump@127.0.0.1:2222", "--ssh-hop", "j2@127.0.0.2:2223", "--ssh-hop-own-key", "j2@127.0.0.2:2223")
	h.ok("ssh-ca", "init", "--principal", "jump")
	out := h.ok("master-key", "rotate").stdout
	contains(t, "rotate output", out, "Sealed 1 password and 1 SSH private key of 1 connection",
		"1 SSH private keys of hops with a key pair of their own", "the SSH CA's private key")
	if strings.Count(out, "Sealed") != 1 {
		t.Fatalf("rotate output:\n%s", out)
	}
}
