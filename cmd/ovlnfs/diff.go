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
	lowerdir := fs.String("lowerdir", "", "colon-separated lower layers, top-most first")
	upperdir := fs.String("upperdir", "", "the upper layer whose changes are listed")
	options := fs.String("o", "", "kernel-style option string (lowerdir=, upperdir=, userxattr, redirect_dir=)")
	config := fs.String("config", "", "an exports file: diff the export named by the argument")
	asJSON := fs.Bool("json", false, "print a JSON array of {kind, path, type, size}")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ovlnfs diff [--json] --lowerdir=L1[:L2...] --upperdir=U
       ovlnfs diff [--json] --config=FILE /EXPORT

Lists what the upper layer changes in the union of the lowers, one path per line: A added
(everything below an added directory too), C changed (replaced, written, or its attributes
or xattrs changed; a directory holding changes), D deleted (once: not what was below it).
Whiteouts, opaque directories and redirects (renamed directories) are read as the kernel
overlay reads them. The layers are only read: a workspace being served can be diffed.

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
	opts, err := diffOptions(*lowerdir, *upperdir, *options, *config, fs.Args())
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "ovlnfs: %s\n", ce.msg)
		} else {
			fmt.Fprintf(stderr, "ovlnfs: %v\n", err)
		}
		return exitBadConfig
	}
	changes, err := billyunion.Diff(opts)
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

// diffOptions names the workspace to diff: by layers (flags or -o), or an export of an
// exports file.
func diffOptions(lowerdir, upperdir, options, config string, args []string) (billyunion.DiffOptions, error) {
	var none billyunion.DiffOptions
	if config != "" {
		if lowerdir != "" || upperdir != "" || options != "" {
			return none, refuse("diff: --config names the layers; --lowerdir, --upperdir and -o contradict it")
		}
		if len(args) != 1 {
			return none, refuse("diff --config: name one export, like /ws/alice")
		}
		loaded, err := loadExportsFile(config)
		if err != nil {
			return none, err
		}
		for _, e := range loaded.exports {
			if e.Path != args[0] {
				continue
			}
			if e.Upper == "" {
				return none, refuse("diff: export %s is read-only: it has no upper to diff", e.Path)
			}
			// Layers committed from the upper lie above the configured lowers.
			committed, err := billyunion.Workspace{Upper: e.Upper, Work: e.Work, XattrPrefix: e.XattrPrefix}.Committed()
			if err != nil {
				return none, err
			}
			return billyunion.DiffOptions{Lowers: append(committed, e.Lowers...), Upper: e.Upper, XattrPrefix: e.XattrPrefix, RedirectDir: e.RedirectDir}, nil
		}
		return none, refuse("diff: %s declares no export %s", config, args[0])
	}
	if len(args) > 0 {
		return none, refuse("diff: unexpected argument %q (the layers are given with --lowerdir and --upperdir, or -o)", args[0])
	}
	var lowerSpec []string
	for _, l := range splitEscaped(lowerdir, ':') {
		if l != "" {
			lowerSpec = append(lowerSpec, unescape(l))
		}
	}
	upper := upperdir
	var mo mountOptions
	if options != "" {
		var err error
		if mo, err = parseMountOptions(options); err != nil {
			return none, err
		}
		if mo.lowers != nil {
			if lowerSpec != nil {
				return none, refuse("lowerdir given both as --lowerdir and in -o")
			}
			lowerSpec = mo.lowers
		}
		if mo.upper != "" {
			if upper != "" {
				return none, refuse("upperdir given both as --upperdir and in -o")
			}
			upper = mo.upper
		}
		if err := checkUnionOptions(mo); err != nil {
			return none, err
		}
	}
	if len(lowerSpec) == 0 || upper == "" {
		return none, refuse("diff: give the lower layers and the upper (--lowerdir and --upperdir, or -o), or --config and an export")
	}
	opts := billyunion.DiffOptions{XattrPrefix: mo.xattrPrefix, RedirectDir: mo.redirectDir}
	for _, l := range lowerSpec {
		dir, err := existingDir("lowerdir", l)
		if err != nil {
			return none, err
		}
		opts.Lowers = append(opts.Lowers, dir)
	}
	var err error
	if opts.Upper, err = existingDir("upperdir", upper); err != nil {
		return none, err
	}
	return opts, nil
}
