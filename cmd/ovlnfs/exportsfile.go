package main

import (
	"errors"
	"fmt"

	"github.com/ovlnfs/ovlnfs/internal/exports"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// loadedExports is an exports file, checked: what the server is given.
type loadedExports struct {
	exports []server.Export
	state   string // the lock manager's state directory, "" when the file names none
}

// loadExportsFile reads the exports file at name and checks every export as the flags'
// one export is checked (layers that exist and do not overlap, options the union
// knows). Its refusal names the file, the line and the export.
func loadExportsFile(name string) (loadedExports, error) {
	f, err := exports.Read(name)
	if err != nil {
		var fe *exports.Error
		if errors.As(err, &fe) {
			return loadedExports{}, refuse("%v", fe)
		}
		return loadedExports{}, refuse("%s: %v", name, err)
	}
	out := loadedExports{state: f.State}
	for i := range f.Exports {
		e := &f.Exports[i]
		at := func(line int, err error) error {
			msg := err.Error()
			var ce *configError
			if errors.As(err, &ce) {
				msg = ce.msg
			}
			return refuse("%s:%d: export %s: %s", name, line, e.Path, msg)
		}
		se := server.Export{Path: e.Path, Clients: e.Rules}
		if se.Lowers, se.Upper, se.Work, se.CreateWork, err = checkLayers(e.Lowers, e.Upper, e.Work); err != nil {
			return loadedExports{}, at(e.Line, err)
		}
		if e.Options != "" {
			if err := exportOptions(e.Options, &se); err != nil {
				return loadedExports{}, at(e.OptionsLine, err)
			}
		}
		out.exports = append(out.exports, se)
	}
	return out, nil
}

// exportOptions applies an export's options line: the union options -o takes, but not
// the layers, which have lines of their own.
func exportOptions(options string, se *server.Export) error {
	mo, err := parseMountOptions(options)
	if err != nil {
		return err
	}
	switch {
	case mo.lowers != nil || mo.upper != "" || mo.work != "":
		return refuse("options %s: the layers are given by the lowers, upper and work lines", options)
	case mo.readOnly:
		return refuse("options %s: ro: an export without an upper line is read-only, and clients' ro rules make one read-only for them", options)
	case mo.dirCacheEntries != nil:
		return refuse("options %s: dircache_entries is the server's (--dircache-entries), not an export's", options)
	}
	if err := checkUnionOptions(mo); err != nil {
		return err
	}
	se.XattrPrefix, se.RedirectDir, se.Index, se.Unicode = mo.xattrPrefix, mo.redirectDir, mo.index, mo.unicode
	se.RefuseAppleDouble = mo.appleDouble == "refuse"
	if (mo.quotaBytes != 0 || mo.quotaInodes != 0) && se.Upper == "" {
		return refuse("options %s: a quota limits the upper layer; this export has no upper line", options)
	}
	se.QuotaBytes, se.QuotaInodes = mo.quotaBytes, mo.quotaInodes
	return nil
}

// describe is an export for a log line.
func describe(e *server.Export) string {
	if e.Upper == "" {
		return fmt.Sprintf("%s (read-only)", e.Path)
	}
	return e.Path
}
