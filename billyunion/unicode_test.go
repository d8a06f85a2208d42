package billyunion

import (
	"errors"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// Two spellings of one name: "café" with a precomposed é (NFC) and with e
// followed by U+0301 COMBINING ACUTE ACCENT (NFD).
const (
	cafeNFC = "caf\u00e9"
	cafeNFD = "cafe\u0301"
)

// listNames is the listing of p, sorted.
func listNames(t *testing.T, fs *FS, p string) []string {
	t.Helper()
	n := strings.Fields(names(t, fs, p))
	sort.Strings(n)
	return n
}

func TestUnicodeModeRefusesUnknownValues(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	var lowers = []string{ls.path("l1", "")}
	_, err := New(Options{Lowers: lowers, Upper: ls.path("u", ""), Work: ls.path("w", ""), Unicode: "nfc"})
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unicode=nfc: %v, want EINVAL", err)
	}
}

// TestUnicodeExactKeepsSpellingsApart: by default names are bytes, as in the
// kernel overlay: the other spelling finds nothing and can be created beside.
func TestUnicodeExactKeepsSpellingsApart(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/"+cafeNFC, "lower")
	fs := ls.open()
	if _, err := fs.Lstat("d/" + cafeNFD); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Lstat of the NFD spelling: %v, want ENOENT", err)
	}
	writeFile(t, fs, "d/"+cafeNFD, "upper")
	if got := listNames(t, fs, "d"); !sameNames(got, []string{cafeNFC, cafeNFD}) {
		t.Fatalf("listing %+q, want both spellings", got)
	}
}

// TestUnicodeInsensitiveFindsEitherSpelling: with unicode=insensitive every
// operation given the other spelling acts on the existing entry, and the
// spelling it was created with is kept.
func TestUnicodeInsensitiveFindsEitherSpelling(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", cafeNFC+"/menu.txt", "lower menu")
	ls.file("l1", "d/"+cafeNFD, "lower nfd")
	fs := ls.openWith(Options{Unicode: UnicodeInsensitive})

	// A directory component in the other spelling.
	if got := readAll(t, fs, cafeNFD+"/menu.txt"); got != "lower menu" {
		t.Fatalf("read through the NFD directory name: %+q", got)
	}
	fi, err := fs.Lstat(cafeNFD)
	if err != nil || fi.Name() != cafeNFC {
		t.Fatalf("Lstat of the NFD spelling: %v, name %+q (want the stored NFC one)", err, fi.Name())
	}
	if got := listNames(t, fs, cafeNFD); !sameNames(got, []string{"menu.txt"}) {
		t.Fatalf("ReadDir through the NFD name: %+q", got)
	}
	a, err := fs.Identify(cafeNFC + "/menu.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.Identify(cafeNFD + "/menu.txt")
	if err != nil || a.ID.Key() != b.ID.Key() || a.Ino != b.Ino {
		t.Fatalf("identities through the two spellings differ: %v %+v %+v", err, a, b)
	}

	// Creating the other spelling finds the existing object.
	if err := fs.Mkdir(cafeNFD, 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("Mkdir of the NFD spelling of an existing directory: %v, want EEXIST", err)
	}
	if _, err := fs.OpenFile("d/"+cafeNFC, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("exclusive create of the NFC spelling of an NFD file: %v, want EEXIST", err)
	}
	writeFile(t, fs, "d/"+cafeNFC, "written as nfc") // O_CREATE|O_TRUNC: the existing file
	if got := listNames(t, fs, "d"); !sameNames(got, []string{cafeNFD}) {
		t.Fatalf("after writing through the NFC spelling, d lists %+q, want the NFD name alone", got)
	}
	if got := readAll(t, fs, "d/"+cafeNFD); got != "written as nfc" {
		t.Fatalf("the NFD file holds %+q", got)
	}
	if err := fs.Link("d/"+cafeNFC, "d/x"); err != nil {
		t.Fatalf("Link from the NFC spelling: %v", err)
	}
	if err := fs.Link("d/x", "d/"+cafeNFC); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("Link onto the NFC spelling of an existing name: %v, want EEXIST", err)
	}
	if err := fs.Chmod("d/"+cafeNFC, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := fs.Lstat("d/" + cafeNFD); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("chmod through the NFC spelling: %v %v", err, fi.Mode())
	}

	// A rename onto the other spelling of itself changes the stored
	// spelling; onto another name's spelling replaces that name.
	if err := fs.Rename("d/"+cafeNFD, "d/"+cafeNFC); err != nil {
		t.Fatalf("rename to the NFC spelling: %v", err)
	}
	if got := listNames(t, fs, "d"); !sameNames(got, []string{cafeNFC, "x"}) {
		t.Fatalf("after the respelling rename d lists %+q", got)
	}
	writeFile(t, fs, "d/y", "y")
	if err := fs.Rename("d/y", "d/"+cafeNFD); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, fs, "d"); !sameNames(got, []string{cafeNFC, "x"}) {
		t.Fatalf("after renaming y over the NFD spelling d lists %+q, want y to replace %+q", got, cafeNFC)
	}
	if got := readAll(t, fs, "d/"+cafeNFD); got != "y" {
		t.Fatalf("the replaced name holds %+q", got)
	}
	if err := fs.Remove("d/" + cafeNFD); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, fs, "d"); !sameNames(got, []string{"x"}) {
		t.Fatalf("after removing through the NFD spelling d lists %+q", got)
	}
	// A name that exists in neither spelling is created as given.
	writeFile(t, fs, "d/"+cafeNFD, "new")
	if got := listNames(t, fs, "d"); !sameNames(got, []string{cafeNFD, "x"}) {
		t.Fatalf("a new name: d lists %+q", got)
	}
	if err := fs.Rmdir(cafeNFD); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("Rmdir of the NFD spelling of a full directory: %v", err)
	}
	if err := fs.Remove(cafeNFD + "/menu.txt"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Rmdir(cafeNFD); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Lstat(cafeNFC); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("the directory removed through its NFD spelling: %v", err)
	}
}

// TestUnicodeInsensitivePrefersExactSpelling: where a layer already holds
// both spellings (written behind the union's back, or by an exact-mode
// server), each spelling finds its own entry, and a third spelling finds
// one of them, always the same.
func TestUnicodeInsensitivePrefersExactSpelling(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	// Two é each: both precomposed (NFC), both decomposed (NFD), and one
	// of each (neither form).
	nfc, nfd, mixed := "\u00e9\u00e9", "e\u0301e\u0301", "\u00e9e\u0301"
	ls.file("l1", nfc, "nfc")
	ls.file("l1", nfd, "nfd")
	fs := ls.openWith(Options{Unicode: UnicodeInsensitive})
	if got := readAll(t, fs, nfc); got != "nfc" {
		t.Fatalf("NFC spelling reads %+q", got)
	}
	if got := readAll(t, fs, nfd); got != "nfd" {
		t.Fatalf("NFD spelling reads %+q", got)
	}
	want := readAll(t, fs, mixed)
	for i := 0; i < 3; i++ {
		if got := readAll(t, fs, mixed); got != want {
			t.Fatalf("a third spelling found %+q, then %+q", want, got)
		}
	}
	if want != "nfc" && want != "nfd" {
		t.Fatalf("a third spelling found %+q", want)
	}
	if got := listNames(t, fs, "/"); !sameNames(got, []string{nfd, nfc}) {
		t.Fatalf("listing %+q", got)
	}
}

// sameNames compares a sorted listing with names in any order.
func sameNames(got, want []string) bool {
	want = slices.Clone(want)
	sort.Strings(want)
	return slices.Equal(got, want)
}

func writeFile(t *testing.T, fs *FS, p, content string) {
	t.Helper()
	f, err := fs.Create(p)
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	if _, err := f.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
