// Package exports reads an ovlnfs exports file: the shared layers by name, and the
// exports, each a path clients mount, its layers (named lowers, an upper and a workdir, or
// none for a read-only export), the union's options and the clients' rules in exports(5)
// syntax (package clients). It checks the file's syntax and its references; what the paths
// hold is checked by the command that serves them, which names the line this package
// recorded.
//
// The format, a directive per line, '#' starting a comment:
//
//	layer base /srv/layers/base          # a lower layer, named
//	state /var/lib/ovlnfs                # the lock manager's state (optional)
//	export /ws/alice                     # an export: the path clients mount
//	    lowers  go base                  # its lower layers by name, top-most first
//	    upper   /srv/ws/alice/upper      # its upper (omit it: read-only)
//	    work    /srv/ws/alice/work       # its workdir (optional: beside the upper)
//	    options index=on,redirect_dir=on # union options, as serve -o takes them
//	    clients 10.0.0.0/24(rw) *(ro)    # who may mount it, and how
//
// Lines of an export are indented; a relative path is relative to the file's directory.
// Fields are separated by blanks, so a path holds neither blanks nor '#'.
//
// Files: exports.go (File, Export, Parse, Read, Error).
//
// Lock order: this package takes no locks.
package exports

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ovlnfs/ovlnfs/internal/clients"
)

// File is what an exports file declares.
type File struct {
	// Name is the file's path, as given to Read.
	Name string
	// State is the lock manager's state directory ("" when not given); StateLine its line.
	State     string
	StateLine int
	// Layers maps a layer's name to its path.
	Layers  map[string]string
	Exports []Export
}

// Export is one export as the file declares it.
type Export struct {
	Line int    // of its "export" directive
	Path string // what clients mount: absolute, clean
	// LowerNames are its lower layers' names, Lowers their paths, top-most first.
	LowerNames, Lowers []string
	Upper, Work        string // "" when not given
	UpperLine          int
	// Options is the union's option string, as serve -o takes it; OptionsLine its line.
	Options     string
	OptionsLine int
	Rules       clients.Rules
}

// ReadOnly reports whether the export has no upper layer.
func (e *Export) ReadOnly() bool { return e.Upper == "" }

// Error is a refused file: where and why.
type Error struct {
	File string
	Line int // 0 when about the whole file
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// maxFileSize refuses what cannot be an exports file (a device, a wrong path).
const maxFileSize = 16 << 20

// Read reads and parses the exports file at name.
func Read(name string) (*File, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, &Error{File: name, Msg: unwrapPathError(err).Error()}
	}
	if !st.Mode().IsRegular() {
		return nil, &Error{File: name, Msg: "not a regular file"}
	}
	if st.Size() > maxFileSize {
		return nil, &Error{File: name, Msg: fmt.Sprintf("over %d bytes: not an exports file", maxFileSize)}
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, &Error{File: name, Msg: unwrapPathError(err).Error()}
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return Parse(name, filepath.Dir(abs), data)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Parse parses an exports file's contents; relative paths are taken relative to dir.
func Parse(name, dir string, data []byte) (*File, error) {
	f := &File{Name: name, Layers: map[string]string{}}
	fail := func(line int, format string, args ...any) error {
		return &Error{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	layerLine := map[string]int{}
	// lowersLine: where each export named its lowers, to say which line names an unknown
	// layer once the whole file (layers may come after the exports) is read.
	var lowersLine []int
	var cur *Export
	seen := map[string]int{} // directives of the current export
	paths := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		raw := sc.Text()
		if i := strings.IndexByte(raw, '#'); i >= 0 {
			raw = raw[:i]
		}
		fields := strings.Fields(raw)
		if len(fields) == 0 {
			continue
		}
		indented := raw[0] == ' ' || raw[0] == '\t'
		key, args := fields[0], fields[1:]
		if !indented {
			cur = nil
			switch key {
			case "layer":
				if len(args) != 2 {
					return nil, fail(n, "layer takes a name and a path: layer NAME PATH")
				}
				if err := checkName(args[0]); err != nil {
					return nil, fail(n, "layer %q: %v", args[0], err)
				}
				if prev, ok := layerLine[args[0]]; ok {
					return nil, fail(n, "layer %s is already declared on line %d", args[0], prev)
				}
				layerLine[args[0]] = n
				f.Layers[args[0]] = resolve(dir, args[1])
			case "state":
				if len(args) != 1 {
					return nil, fail(n, "state takes one directory: state DIR")
				}
				if f.StateLine != 0 {
					return nil, fail(n, "state is already given on line %d", f.StateLine)
				}
				f.State, f.StateLine = resolve(dir, args[0]), n
			case "export":
				if len(args) != 1 {
					return nil, fail(n, "export takes one path, the one clients mount: export /PATH (its layers and clients follow on indented lines)")
				}
				p := args[0]
				if !strings.HasPrefix(p, "/") || path.Clean(p) != p || len(p) > 1024 {
					return nil, fail(n, "export %q: the path clients mount must be absolute and clean (like /ws/alice), at most 1024 bytes", p)
				}
				if prev, ok := paths[p]; ok {
					return nil, fail(n, "export %s is already declared on line %d", p, prev)
				}
				paths[p] = n
				f.Exports = append(f.Exports, Export{Line: n, Path: p})
				lowersLine = append(lowersLine, 0)
				cur = &f.Exports[len(f.Exports)-1]
				clear(seen)
			default:
				if isExportDirective(key) {
					return nil, fail(n, "%s belongs to an export: indent it below its export line", key)
				}
				return nil, fail(n, "unknown directive %q (known: layer, state, export; and, indented below an export: lowers, upper, work, options, clients)", key)
			}
			continue
		}
		if cur == nil {
			return nil, fail(n, "an indented line outside an export (indent only the lines of an export)")
		}
		if prev, ok := seen[key]; ok {
			return nil, fail(n, "%s is already given for export %s on line %d", key, cur.Path, prev)
		}
		seen[key] = n
		switch key {
		case "lowers":
			if len(args) == 0 {
				return nil, fail(n, "lowers needs at least one layer name")
			}
			cur.LowerNames = args
			lowersLine[len(lowersLine)-1] = n
		case "upper", "work":
			if len(args) != 1 {
				return nil, fail(n, "%s takes one directory", key)
			}
			if key == "upper" {
				cur.Upper, cur.UpperLine = resolve(dir, args[0]), n
			} else {
				cur.Work = resolve(dir, args[0])
			}
		case "options":
			if len(args) != 1 {
				return nil, fail(n, "options takes one comma-separated list, without spaces")
			}
			cur.Options, cur.OptionsLine = args[0], n
		case "clients":
			if len(args) == 0 {
				return nil, fail(n, "clients needs at least one client, like 10.0.0.0/24(rw) or *(ro)")
			}
			for _, a := range args {
				r, err := clients.ParseRule(a)
				if err != nil {
					return nil, fail(n, "clients: %v", err)
				}
				cur.Rules = append(cur.Rules, r)
			}
		default:
			return nil, fail(n, "unknown export directive %q (known: lowers, upper, work, options, clients)", key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fail(n+1, "%v", err)
	}
	if len(f.Exports) == 0 {
		return nil, &Error{File: name, Msg: "declares no export"}
	}
	uppers := map[string]int{}
	for i := range f.Exports {
		e := &f.Exports[i]
		switch {
		case e.LowerNames == nil:
			return nil, fail(e.Line, "export %s has no lowers line", e.Path)
		case e.Rules == nil:
			return nil, fail(e.Line, "export %s has no clients line: no client could mount it", e.Path)
		case e.Work != "" && e.Upper == "":
			return nil, fail(e.Line, "export %s has a work directory but no upper", e.Path)
		}
		for _, ln := range e.LowerNames {
			p, ok := f.Layers[ln]
			if !ok {
				return nil, fail(lowersLine[i], "export %s: no layer is named %q (declare it with: layer %s PATH)", e.Path, ln, ln)
			}
			e.Lowers = append(e.Lowers, p)
		}
		if e.Upper != "" {
			// Two unions writing one upper would corrupt it.
			if prev, ok := uppers[e.Upper]; ok {
				return nil, fail(e.UpperLine, "export %s: upper %s is also the upper of the export on line %d; each export needs its own", e.Path, e.Upper, prev)
			}
			uppers[e.Upper] = e.Line
		}
		if e.Work != "" {
			if prev, ok := uppers["work:"+e.Work]; ok {
				return nil, fail(e.Line, "export %s: work %s is also the work directory of the export on line %d; each export needs its own", e.Path, e.Work, prev)
			}
			uppers["work:"+e.Work] = e.Line
		}
	}
	return f, nil
}

func isExportDirective(key string) bool {
	switch key {
	case "lowers", "upper", "work", "options", "clients":
		return true
	}
	return false
}

func checkName(name string) error {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return errors.New("a layer name is letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}
