package jobs

import (
	"strings"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// Program returns the absolute path a program named prog runs as under the
// policy: an allowed program, or with AnyProgram any program found on
// PATH. A program that may not run is a *NotAllowedError. Besides command
// steps, the policy decides the proxy commands that carry SSH connections.
func (p CommandPolicy) Program(prog string) (string, error) { return p.program(prog) }

// hopsText lists the SSH hops of spec for the run log:
// "u@bastion-a:22 → u@bastion-b:22" (keepalives run on every hop).
func hopsText(spec *connection.Spec) string {
	hops := spec.Hops()
	parts := make([]string, len(hops))
	for i, h := range hops {
		parts[i] = h.String()
	}
	return strings.Join(parts, " → ")
}
