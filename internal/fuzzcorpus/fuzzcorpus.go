// Package fuzzcorpus keeps a fuzz target's committed seed corpus, the files under
// testdata/fuzz/<target>/ that `go test` runs, in step with the seeds its test builds in
// code: a test calls Check with the seeds, and fails when a file is missing or differs.
// With OVLNFS_WRITE_FUZZ_SEEDS=1 in the environment, Check writes the files instead:
//
//	OVLNFS_WRITE_FUZZ_SEEDS=1 go test -run TestSeedCorpus ./internal/...
//
// Files: fuzzcorpus.go (Seed, Check).
package fuzzcorpus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// WriteEnv is the environment variable that makes Check write the corpus.
const WriteEnv = "OVLNFS_WRITE_FUZZ_SEEDS"

// Seed is one input of a fuzz target: a file name and the target's arguments in order
// ([]byte, string, bool, uint8, uint32 or uint64).
type Seed struct {
	Name   string
	Values []any
}

// Check compares testdata/fuzz/<target>/ with seeds, or writes them there.
func Check(t *testing.T, target string, seeds []Seed) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	write := os.Getenv(WriteEnv) == "1"
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range seeds {
		want := encode(t, s.Values)
		p := filepath.Join(dir, s.Name)
		if write {
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("seed %s of %s is not committed as built (%v); rewrite the corpus with %s=1 go test -run TestSeedCorpus",
				s.Name, target, err, WriteEnv)
		}
	}
}

// encode writes values in the corpus file format of `go test` (version 1).
func encode(t *testing.T, values []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case bool, uint32, uint64:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		case uint8:
			fmt.Fprintf(&b, "uint8(%d)\n", v)
		default:
			t.Fatalf("fuzzcorpus: no encoding for %T", v)
		}
	}
	return b.Bytes()
}
