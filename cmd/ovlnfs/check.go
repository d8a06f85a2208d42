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
	layers := addLayerFlags(fs)
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
	named, err := layers.resolve("check", fs.Args())
	if err == nil && named.workIsAuto && named.upper != "" {
		if _, werr := existingDir("workdir", named.work); werr != nil {
			err = refuse("check: no workdir at %s (give --workdir)", named.work)
		}
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
	opts := billyunion.CheckOptions{Lowers: named.lowers, Upper: named.upper, Work: named.work,
		XattrPrefix: named.xattrPrefix, Repair: *repair}
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
