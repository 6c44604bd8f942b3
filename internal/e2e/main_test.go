package e2e_test

import (
	"context"
	"os"
	"testing"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
)

// binary is the pgrelay binary built by TestMain for this test run; it is
// set once, before any test runs.
var binary string

func TestMain(m *testing.M) {
	os.Exit(e2etest.MainSlow(m, "e2e", &binary))
}

var bg = context.Background()
