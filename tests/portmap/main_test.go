package portmap_test

import (
	"os"
	"testing"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestMain removes the ovlnfs binary the tests built.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
