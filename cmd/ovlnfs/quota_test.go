package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestQuotaOptions: -o quota_bytes=SIZE and quota_inodes=N reach the configuration; bad
// values, and a quota on a read-only export, are refused with exit status 2 and one line
// naming the option.
func TestQuotaOptions(t *testing.T) {
	l := newLayout(t)
	layers := "lowerdir=" + l.l1 + ",upperdir=" + l.upper + ",workdir=" + l.work
	cfg, err := parseServeArgs([]string{"-o", layers + ",quota_bytes=10G,quota_inodes=100000"}, io.Discard)
	if err != nil || cfg.quotaBytes != 10<<30 || cfg.quotaInodes != 100000 {
		t.Fatalf("%+v, %v; want 10 GiB and 100000 inodes", cfg, err)
	}
	for _, c := range []struct{ opt, want string }{
		{layers + ",quota_bytes=0", "quota_bytes=0"},
		{layers + ",quota_bytes=ten", "quota_bytes=ten"},
		{layers + ",quota_bytes=1.5G", "quota_bytes=1.5G"},
		{layers + ",quota_bytes=", "quota_bytes="},
		{layers + ",quota_inodes=-1", "quota_inodes=-1"},
		{layers + ",quota_inodes=10k", "quota_inodes=10k"},
		{"lowerdir=" + l.l1 + ",quota_bytes=1G", "read-only"},
	} {
		code, _, stderr := runCLI(t, context.Background(), "serve", "-o", c.opt)
		if code != exitBadConfig || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("-o %s: exit %d, stderr %q; want 2 and one line with %q", c.opt, code, stderr, c.want)
		}
	}
	code, _, stderr := runCLI(t, context.Background(), "serve", "--read-only", "-o", layers+",quota_inodes=5")
	if code != exitBadConfig || !strings.Contains(stderr, "read-only") {
		t.Errorf("--read-only with a quota: exit %d, stderr %q", code, stderr)
	}
	// The exports file's options line.
	head := "layer l1 " + l.l1 + "\n"
	p := writeExports(t, t.TempDir(), head+"export /a\n  lowers l1\n  upper "+l.upper+"\n  work "+l.work+"\n  options quota_bytes=1M,quota_inodes=7\n  clients *\n")
	got, err := loadExportsFile(p)
	if err != nil || len(got.exports) != 1 || got.exports[0].QuotaBytes != 1<<20 || got.exports[0].QuotaInodes != 7 {
		t.Fatalf("exports file: %+v, %v", got, err)
	}
	p = writeExports(t, t.TempDir(), head+"export /a\n  lowers l1\n  options quota_bytes=1M\n  clients *\n")
	if _, err := loadExportsFile(p); err == nil || !strings.Contains(err.Error(), "no upper line") {
		t.Errorf("a quota on a read-only export: %v", err)
	}
	p = writeExports(t, t.TempDir(), head+"export /a\n  lowers l1\n  upper "+l.upper+"\n  work "+l.work+"\n  options quota_bytes=lots\n  clients *\n")
	if _, err := loadExportsFile(p); err == nil || !strings.Contains(err.Error(), "exports:6") || !strings.Contains(err.Error(), "quota_bytes=lots") {
		t.Errorf("a bad quota in the exports file: %v", err)
	}
}
