package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// runCheck is `ovlnfs check`: a consistency check of a layer set, and with --repair the
// repairs that lose no data.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lowerdir := fs.String("lowerdir", "", "colon-separated lower layers, top-most first")
	upperdir := fs.String("upperdir", "", "the upper layer (omit it to check lowers alone)")
	workdir := fs.String("workdir", "", "the workdir (default: beside the upper, as serve)")
	options := fs.String("o", "", "kernel-style option string (lowerdir=, upperdir=, workdir=, userxattr)")
	config := fs.String("config", "", "an exports file: check the export named by the argument")
	repair := fs.Bool("repair", false, "repair what can be repaired without losing data (the workspace must not be served)")
	asJSON := fs.Bool("json", false, "print the findings as a JSON array")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ovlnfs check [--repair] [--json] --lowerdir=L1[:L2...] [--upperdir=U [--workdir=W]]
       ovlnfs check [--repair] [--json] --config=FILE /EXPORT

Finds: leftovers in the work directory (the union's scratch, an interrupted reset,
half-taken snapshots), index entries out of step with their links, origins and
redirects in the upper that point nowhere, whiteouts in the upper or a lower that hide
nothing, and a workdir another server holds. --repair removes the leftovers (an
interrupted reset is taken back or finished), the stale index entries and the useless
whiteouts of the upper, removes dangling origins and replaces dangling redirects by
opaque marks; lowers are never changed. Exit status 0: nothing found (or all repaired),
1: something found and not repaired, 2: bad arguments.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	opts, err := checkOptions(*lowerdir, *upperdir, *workdir, *options, *config, fs.Args())
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "ovlnfs: %s\n", ce.msg)
		} else {
			fmt.Fprintf(stderr, "ovlnfs: %v\n", err)
		}
		return exitBadConfig
	}
	opts.Repair = *repair
	var findings []billyunion.Finding
	if opts.Upper != "" {
		release, err := server.HoldWorkdir(opts.Work)
		switch {
		case err == nil:
			defer release()
		case errors.Is(err, server.ErrWorkdirBusy):
			if opts.Repair {
				fmt.Fprintf(stderr, "ovlnfs: check --repair: workdir %s is %v: stop that server first\n", opts.Work, err)
				return exitFailure
			}
			// Checked anyway, read-only; what a running server is doing may show.
			findings = append(findings, billyunion.Finding{Kind: "in-use", Where: opts.Work, Detail: err.Error()})
		default:
			fmt.Fprintf(stderr, "ovlnfs: check: workdir %s: %v\n", opts.Work, unwrapOpError(err))
			return exitFailure
		}
	}
	found, err := billyunion.Check(opts)
	findings = append(findings, found...)
	if err != nil {
		fmt.Fprintf(stderr, "ovlnfs: check: %v\n", err)
		return exitFailure
	}
	unrepaired := 0
	for _, f := range findings {
		if !f.Repaired {
			unrepaired++
		}
	}
	if *asJSON {
		type jsonFinding struct {
			Kind     string `json:"kind"`
			Where    string `json:"where"`
			Detail   string `json:"detail"`
			Repaired bool   `json:"repaired"`
		}
		out := make([]jsonFinding, 0, len(findings))
		for _, f := range findings {
			out = append(out, jsonFinding{f.Kind, f.Where, f.Detail, f.Repaired})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		for _, f := range findings {
			state := ""
			if f.Repaired {
				state = " [repaired]"
			}
			fmt.Fprintf(stdout, "%s %s: %s%s\n", f.Kind, f.Where, f.Detail, state)
		}
		fmt.Fprintf(stdout, "%d found, %d repaired\n", len(findings), len(findings)-unrepaired)
	}
	if unrepaired > 0 {
		return exitFailure
	}
	return exitOK
}

// checkOptions names the layer set to check: by flags or -o, or an export of an exports
// file.
func checkOptions(lowerdir, upperdir, workdir, options, config string, args []string) (billyunion.CheckOptions, error) {
	var none billyunion.CheckOptions
	if config != "" {
		if lowerdir != "" || upperdir != "" || workdir != "" || options != "" {
			return none, refuse("check: --config names the layers; --lowerdir, --upperdir, --workdir and -o contradict it")
		}
		if len(args) != 1 {
			return none, refuse("check --config: name one export, like /ws/alice")
		}
		loaded, err := loadExportsFile(config)
		if err != nil {
			return none, err
		}
		for _, e := range loaded.exports {
			if e.Path != args[0] {
				continue
			}
			var committed []string
			if e.Upper != "" {
				if committed, err = (billyunion.Workspace{Upper: e.Upper, Work: e.Work, XattrPrefix: e.XattrPrefix}).Committed(); err != nil {
					return none, err
				}
			}
			return billyunion.CheckOptions{Lowers: append(committed, e.Lowers...), Upper: e.Upper, Work: e.Work, XattrPrefix: e.XattrPrefix}, nil
		}
		return none, refuse("check: %s declares no export %s", config, args[0])
	}
	if len(args) > 0 {
		return none, refuse("check: unexpected argument %q", args[0])
	}
	var lowerSpec []string
	for _, l := range splitEscaped(lowerdir, ':') {
		if l != "" {
			lowerSpec = append(lowerSpec, unescape(l))
		}
	}
	upper, work := upperdir, workdir
	var mo mountOptions
	if options != "" {
		var err error
		if mo, err = parseMountOptions(options); err != nil {
			return none, err
		}
		if mo.lowers != nil {
			lowerSpec = mo.lowers
		}
		if mo.upper != "" {
			upper = mo.upper
		}
		if mo.work != "" {
			work = mo.work
		}
	}
	if len(lowerSpec) == 0 {
		return none, refuse("check: give the lower layers (--lowerdir or -o lowerdir=), or --config and an export")
	}
	lowers, upper, work, workIsAuto, err := checkLayers(lowerSpec, upper, work)
	if err != nil {
		return none, err
	}
	if workIsAuto && upper != "" {
		if _, err := existingDir("workdir", work); err != nil {
			return none, refuse("check: no workdir at %s (give --workdir)", work)
		}
	}
	return billyunion.CheckOptions{Lowers: lowers, Upper: upper, Work: work, XattrPrefix: mo.xattrPrefix}, nil
}
