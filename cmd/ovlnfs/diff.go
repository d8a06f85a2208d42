package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// runDiff is `ovlnfs diff`: what a workspace's upper changes, by path, as docker diff
// prints it (A, C, D), or as JSON with kinds and sizes. The layers are only read, so a
// workspace being served can be diffed.
func runDiff(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	layers := addLayerFlags(fs)
	asJSON := fs.Bool("json", false, "print a JSON array of {kind, path, type, size}")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ovlnfs diff [--json] --lowerdir=L1[:L2...] --upperdir=U
       ovlnfs diff [--json] --config=FILE /EXPORT

Lists what the upper layer changes in the union of the lowers, one path per line: A added
(everything below an added directory too), C changed (replaced, written, or its attributes
or xattrs changed; a directory holding changes), D deleted (once: not what was below it).
Whiteouts, opaque directories and redirects (renamed directories) are read as the kernel
overlay reads them, and the workdir's index: a lower file with several names changed
through one shows as changed under each. The layers are only read: a workspace being
served can be diffed.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitBadConfig
	}
	named, err := layers.resolve("diff", fs.Args())
	if err == nil && named.upper == "" {
		err = refuse("diff: the layers have no upper: nothing to diff")
	}
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "ovlnfs: %s\n", ce.msg)
		} else {
			fmt.Fprintf(stderr, "ovlnfs: %v\n", err)
		}
		return exitBadConfig
	}
	changes, err := billyunion.Diff(billyunion.DiffOptions{Lowers: named.lowers, Upper: named.upper,
		XattrPrefix: named.xattrPrefix, RedirectDir: named.redirectDir, Work: named.work})
	if err != nil {
		fmt.Fprintf(stderr, "ovlnfs: diff: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		type jsonChange struct {
			Kind string `json:"kind"`
			Path string `json:"path"`
			Type string `json:"type"`
			Size int64  `json:"size"`
		}
		out := make([]jsonChange, len(changes))
		for i, c := range changes {
			out[i] = jsonChange{Kind: kindName(c.Kind), Path: c.Path, Type: c.Type, Size: c.Size}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return exitFailure
		}
		return exitOK
	}
	for _, c := range changes {
		if _, err := fmt.Fprintf(stdout, "%c %s\n", c.Kind, c.Path); err != nil {
			return exitFailure
		}
	}
	return exitOK
}

func kindName(k billyunion.ChangeKind) string {
	switch k {
	case billyunion.Added:
		return "added"
	case billyunion.Deleted:
		return "deleted"
	}
	return "changed"
}
