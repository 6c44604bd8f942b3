package jobs

import (
	"errors"
	"syscall"
)

// hasACL reports whether path carries a POSIX access ACL (which may grant
// more than its mode says).
func hasACL(path string) (bool, error) {
	n, err := syscall.Getxattr(path, "system.posix_acl_access", nil)
	switch {
	case errors.Is(err, syscall.ENODATA), errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP):
		return false, nil
	case err != nil:
		return false, err
	}
	return n > 0, nil
}
