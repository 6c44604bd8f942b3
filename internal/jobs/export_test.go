package jobs

// SetOnHandOver makes r call f with each run's directory once it was given
// to the user commands run as (Commands.RunAs), before any command starts.
func SetOnHandOver(r *Runner, f func(dir string)) { r.onHandOver = f }

// RunDirChildEnv makes the test binary a process that makes a run
// directory, prints its path and waits to be killed (see TestMain and
// TestSweepRunDirs).
const RunDirChildEnv = "PGRELAY_TEST_RUNDIR_CHILD"

// keptRunDirs keeps the run directories of MakeRunDir, and so their
// locks, for the life of the process.
var keptRunDirs []*runDir

// MakeRunDir makes a run directory as a run does, its lock held until the
// process ends, and returns its path.
func MakeRunDir() (string, error) {
	d, err := newRunDir()
	if err != nil {
		return "", err
	}
	keptRunDirs = append(keptRunDirs, d)
	return d.path, nil
}
