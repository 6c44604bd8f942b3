package jobs

// SetOnHandOver makes r call f with each run's directory once it was given
// to the user commands run as (Commands.RunAs), before any command starts.
func SetOnHandOver(r *Runner, f func(dir string)) { r.onHandOver = f }
