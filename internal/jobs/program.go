package jobs

// Program returns the absolute path a program named prog runs as under the
// policy: an allowed program, or with AnyProgram any program found on
// PATH. A program that may not run is a *NotAllowedError. Besides command
// steps, the policy decides the proxy commands that carry SSH connections.
func (p CommandPolicy) Program(prog string) (string, error) { return p.program(prog) }
