package cli

import (
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
)

// keyLoginState says whether the bastion has accepted the connection's key
// yet: until it has, the key is probably not installed.
func keyLoginState(v *app.ConnectionView) string {
	t := v.SSHTunnel
	if t == nil {
		return ""
	}
	if t.KeyUsedAt != nil {
		return "accepted by the bastion (last login " + t.KeyUsedAt.Local().Format(time.RFC3339) + ")"
	}
	return fmt.Sprintf("no login with this key yet: install it on the bastion (pgrelay connection public-key %s --restricted), "+
		"then run pgrelay connection test %s", v.Name, v.Name)
}
