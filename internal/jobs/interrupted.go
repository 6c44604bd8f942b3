package jobs

// InterruptedError is the cause of a run stopped by what happened to the
// process working it, not by the run itself, a user or its connection: the
// process shutting down, or the run declared lost by another process's
// reaper. A run stopped so fails (it is not a cancel), and says nothing of
// its connection's health.
type InterruptedError struct {
	// Reason says what stopped the run, as shown in its record.
	Reason string
}

func (e *InterruptedError) Error() string { return e.Reason }
