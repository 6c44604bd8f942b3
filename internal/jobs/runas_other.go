//go:build !linux

package jobs

import "errors"

// asUser would call f with the user's file permissions; that is done on
// Linux only, where --run-as works.
func (r *RunAs) asUser(func()) error {
	return errors.New("checking paths with another user's permissions needs Linux")
}

// closeInheritedFiles would keep the files this process was started with
// from the programs it starts as the user of --run-as, which works on
// Linux only.
func closeInheritedFiles() error { return nil }
