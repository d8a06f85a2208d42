package main

import (
	"flag"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// layerArgs are the flags the layer tools (diff, check) name a layer set with: the
// layers and -o as serve takes them, or an export of an exports file.
type layerArgs struct {
	lowerdir, upperdir, workdir, options, config *string
}

func addLayerFlags(fs *flag.FlagSet) *layerArgs {
	return &layerArgs{
		lowerdir: fs.String("lowerdir", "", "colon-separated lower layers, top-most first"),
		upperdir: fs.String("upperdir", "", "the upper layer"),
		workdir:  fs.String("workdir", "", "the workdir (default: beside the upper, as serve)"),
		options:  fs.String("o", "", "kernel-style option string (lowerdir=, upperdir=, workdir=, userxattr, redirect_dir=)"),
		config:   fs.String("config", "", "an exports file: the export named by the argument"),
	}
}

// namedLayers is the layer set the flags name, checked as serve checks its layers.
type namedLayers struct {
	lowers                   []string // committed layers of an export first
	upper, work              string
	workIsAuto               bool
	xattrPrefix, redirectDir string
}

// resolve reads the flags and the arguments of the tool cmd.
func (a *layerArgs) resolve(cmd string, args []string) (namedLayers, error) {
	var none namedLayers
	if *a.config != "" {
		if *a.lowerdir != "" || *a.upperdir != "" || *a.workdir != "" || *a.options != "" {
			return none, refuse("%s: --config names the layers; --lowerdir, --upperdir, --workdir and -o contradict it", cmd)
		}
		if len(args) != 1 {
			return none, refuse("%s --config: name one export, like /ws/alice", cmd)
		}
		loaded, err := loadExportsFile(*a.config)
		if err != nil {
			return none, err
		}
		for _, e := range loaded.exports {
			if e.Path != args[0] {
				continue
			}
			out := namedLayers{lowers: e.Lowers, upper: e.Upper, work: e.Work, xattrPrefix: e.XattrPrefix, redirectDir: e.RedirectDir}
			if e.Upper != "" {
				// Layers committed from the upper lie above the configured lowers (or
				// replace them, once one was flattened).
				stack, err := billyunion.Workspace{Upper: e.Upper, Work: e.Work, XattrPrefix: e.XattrPrefix}.ReadStack()
				if err != nil {
					return none, err
				}
				out.lowers, _, _, _ = stack.Lowers(e.Lowers)
			}
			return out, nil
		}
		return none, refuse("%s: %s declares no export %s", cmd, *a.config, args[0])
	}
	if len(args) > 0 {
		return none, refuse("%s: unexpected argument %q (the layers are given with --lowerdir, --upperdir and --workdir, or -o)", cmd, args[0])
	}
	var lowerSpec []string
	for _, l := range splitEscaped(*a.lowerdir, ':') {
		if l != "" {
			lowerSpec = append(lowerSpec, unescape(l))
		}
	}
	upper, work := *a.upperdir, *a.workdir
	var mo mountOptions
	if *a.options != "" {
		var err error
		if mo, err = parseMountOptions(*a.options); err != nil {
			return none, err
		}
		for _, c := range []struct {
			name     string
			flag, in string
			dst      *string
		}{{"upperdir", upper, mo.upper, &upper}, {"workdir", work, mo.work, &work}} {
			if c.in == "" {
				continue
			}
			if c.flag != "" {
				return none, refuse("%s given both as --%s and in -o", c.name, c.name)
			}
			*c.dst = c.in
		}
		if mo.lowers != nil {
			if lowerSpec != nil {
				return none, refuse("lowerdir given both as --lowerdir and in -o")
			}
			lowerSpec = mo.lowers
		}
		if err := checkUnionOptions(mo); err != nil {
			return none, err
		}
	}
	if len(lowerSpec) == 0 {
		return none, refuse("%s: give the lower layers (--lowerdir or -o lowerdir=), or --config and an export", cmd)
	}
	out := namedLayers{xattrPrefix: mo.xattrPrefix, redirectDir: mo.redirectDir}
	var err error
	if out.lowers, out.upper, out.work, out.workIsAuto, err = checkLayers(lowerSpec, upper, work); err != nil {
		return none, err
	}
	return out, nil
}
