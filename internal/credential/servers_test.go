package credential_test

import (
	"testing"

	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
)

// The local HTTPS servers of these tests are in package credentialtest.

type (
	fakeDatabricks = credentialtest.Databricks
	fakeGoogle     = credentialtest.Google
)

func newFakeDatabricks(t *testing.T, issue credentialtest.IssueFunc) *fakeDatabricks {
	return credentialtest.NewDatabricks(t, issue)
}

func newFakeGoogle(t *testing.T, issue credentialtest.IssueFunc) *fakeGoogle {
	return credentialtest.NewGoogle(t, issue)
}

var (
	rotator     = credentialtest.Rotator
	randomToken = credentialtest.RandomToken
)
