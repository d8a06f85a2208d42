package billyunion

import (
	"os"
	"strings"
	"testing"
)

// TestMovesIndexTempRecordsRemovedAtStart: a process killed between writing a moves
// record under its temporary name and renaming it into place leaves the temporary in
// Work/ovlnfs-index (tests/crash found them there after SIGKILLs). The next start removes
// such leftovers, and keeps the records.
func TestMovesIndexTempRecordsRemovedAtStart(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a", "a")
	fs := ls.open()
	noErr(t, "rename", fs.Rename("a", "b"))
	fs.Close()
	index := ls.path("w", "ovlnfs-index")
	records := dirNames(t, index)
	if len(records) == 0 {
		t.Fatal("the rename left no record")
	}
	for _, n := range []string{"#tmp.4242.1", "#tmp.4242.2f"} {
		noErr(t, "leftover", os.WriteFile(index+"/"+n, []byte{1, 0}, 0o600))
	}
	fs = ls.open()
	if got := dirNames(t, index); strings.Join(got, ",") != strings.Join(records, ",") {
		t.Errorf("after a start the index holds %v, want the records %v alone", got, records)
	}
	if got := readAll(t, fs, "b"); got != "a" {
		t.Errorf("b reads %q", got)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
