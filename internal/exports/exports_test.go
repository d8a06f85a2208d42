package exports

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const good = `# two workspaces and a read-only view
layer base /srv/base
layer go   tools/go     # relative: to the file's directory

state /var/lib/ovlnfs

export /ws/alice
    lowers  go base
    upper   /srv/ws/alice/upper
    work    /srv/ws/alice/work
    options index=on,redirect_dir=on
    clients 10.0.0.0/24(rw) 127.0.0.1(rw,no_root_squash,insecure)

export /ro
	lowers base
	clients *(ro)
`

func TestParse(t *testing.T) {
	f, err := Parse("exports.conf", "/etc/ovlnfs", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if f.State != "/var/lib/ovlnfs" || f.StateLine != 5 {
		t.Errorf("state %q line %d", f.State, f.StateLine)
	}
	if len(f.Exports) != 2 {
		t.Fatalf("%d exports, want 2", len(f.Exports))
	}
	a := f.Exports[0]
	if a.Path != "/ws/alice" || a.Line != 7 || !slices.Equal(a.Lowers, []string{"/etc/ovlnfs/tools/go", "/srv/base"}) ||
		a.Upper != "/srv/ws/alice/upper" || a.Work != "/srv/ws/alice/work" || a.Options != "index=on,redirect_dir=on" ||
		len(a.Rules) != 2 || a.Rules[1].String() != "127.0.0.1(rw,no_root_squash,insecure)" || a.ReadOnly() {
		t.Errorf("alice: %+v", a)
	}
	ro := f.Exports[1]
	if ro.Path != "/ro" || !ro.ReadOnly() || !slices.Equal(ro.LowerNames, []string{"base"}) || ro.Rules[0].String() != "*(ro,root_squash)" {
		t.Errorf("ro: %+v", ro)
	}
}

func TestParseRefusals(t *testing.T) {
	const head = "layer base /b\n"
	for name, c := range map[string]struct {
		text string
		line int
		msg  string
	}{
		"no export":         {head, 0, "declares no export"},
		"unknown":           {head + "exprt /x\n", 2, `unknown directive "exprt"`},
		"unindented":        {head + "export /x\nlowers base\n", 3, "indent it below its export"},
		"orphan indent":     {head + "  lowers base\n", 2, "outside an export"},
		"relative export":   {head + "export ws\n  lowers base\n  clients *\n", 2, "must be absolute and clean"},
		"unclean export":    {head + "export /ws/../x\n  lowers base\n  clients *\n", 2, "must be absolute and clean"},
		"twice":             {head + "export /x\n  lowers base\n  clients *\nexport /x\n  lowers base\n  clients *\n", 5, "already declared on line 2"},
		"dup directive":     {head + "export /x\n  lowers base\n  lowers base\n", 4, "already given for export /x on line 3"},
		"unknown layer":     {head + "export /x\n  lowers base nope\n  clients *\n", 3, `no layer is named "nope"`},
		"no lowers":         {head + "export /x\n  clients *\n", 2, "no lowers line"},
		"no clients":        {head + "export /x\n  lowers base\n", 2, "no clients line"},
		"bad client":        {head + "export /x\n  lowers base\n  clients host.example(rw)\n", 4, "host names are not supported"},
		"work only":         {head + "export /x\n  lowers base\n  work /w\n  clients *\n", 2, "work directory but no upper"},
		"shared upper":      {head + "export /x\n  lowers base\n  upper /u\n  clients *\nexport /y\n  lowers base\n  upper /u\n  clients *\n", 8, "also the upper of the export on line 2"},
		"layer twice":       {head + "layer base /c\n", 2, "already declared on line 1"},
		"bad layer name":    {"layer a/b /c\n", 1, "letters, digits"},
		"layer args":        {"layer base\n", 1, "layer NAME PATH"},
		"unknown in export": {head + "export /x\n  lowerdir base\n", 3, `unknown export directive "lowerdir"`},
	} {
		_, err := Parse("f", "/", []byte(c.text))
		var e *Error
		if !errors.As(err, &e) || e.Line != c.line || !strings.Contains(e.Msg, c.msg) {
			t.Errorf("%s: got %v, want line %d saying %q", name, err, c.line, c.msg)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "exports")
	if err := os.WriteFile(p, []byte("layer l rel\nexport /\n  lowers l\n  clients *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.Exports[0].Lowers[0] != filepath.Join(dir, "rel") {
		t.Errorf("relative layer resolved to %s", f.Exports[0].Lowers[0])
	}
	if _, err := Read(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("f", "/", data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("an error that is not an *Error: %v", err)
			}
			return
		}
		for _, e := range file.Exports {
			if len(e.Lowers) == 0 || len(e.Rules) == 0 || !strings.HasPrefix(e.Path, "/") {
				t.Fatalf("accepted an incomplete export: %+v", e)
			}
		}
	})
}

// TestExampleParses: the example the README's demo serves reads as three exports.
func TestExampleParses(t *testing.T) {
	f, err := Read(filepath.Join("..", "..", "examples", "workspaces.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range f.Exports {
		paths = append(paths, e.Path)
	}
	if !slices.Equal(paths, []string{"/ws/alice", "/ws/bob", "/base"}) || f.State == "" || !f.Exports[2].ReadOnly() {
		t.Errorf("example: exports %v, state %q", paths, f.State)
	}
	for _, e := range f.Exports {
		for _, l := range e.Lowers {
			if _, err := os.Stat(l); err != nil {
				t.Errorf("%s: lower %s: %v", e.Path, l, err)
			}
		}
	}
}
