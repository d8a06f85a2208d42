package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckCommand: ovlnfs check of a clean workspace, of one with a leftover (found,
// then repaired), and of one a running server holds (reported; --repair refused).
func TestCheckCommand(t *testing.T) {
	l := newLayout(t)
	args := []string{"check", "--lowerdir=" + l.l1 + ":" + l.l2, "--upperdir=" + l.upper, "--workdir=" + l.work}
	if err := os.MkdirAll(filepath.Join(l.work, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, context.Background(), args...)
	if code != exitOK || !strings.Contains(out, "0 found") {
		t.Fatalf("clean: exit %d, %q %q", code, out, errs)
	}
	if err := os.WriteFile(filepath.Join(l.work, "work", "#left"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCLI(t, context.Background(), args...); code != exitFailure || !strings.Contains(out, "work-leftover") {
		t.Errorf("a leftover: exit %d, %q", code, out)
	}
	if code, out, _ := runCLI(t, context.Background(), append(args, "--repair")...); code != exitOK || !strings.Contains(out, "[repaired]") {
		t.Errorf("--repair: exit %d, %q", code, out)
	}
	if _, err := os.Lstat(filepath.Join(l.work, "work", "#left")); err == nil {
		t.Error("the leftover is still there")
	}

	port := freePort(t)
	r := startServe(t, "--lowerdir="+l.l1, "--upperdir="+l.upper, "--workdir="+l.work, "--listen="+port, "--portmap=off", "--nlm=off")
	_ = r
	args = []string{"check", "--lowerdir=" + l.l1, "--upperdir=" + l.upper, "--workdir=" + l.work}
	if code, out, _ := runCLI(t, context.Background(), args...); code != exitFailure || !strings.Contains(out, "in-use") {
		t.Errorf("a served workspace: exit %d, %q", code, out)
	}
	if code, _, errs := runCLI(t, context.Background(), append(args, "--repair")...); code != exitFailure || !strings.Contains(errs, "stop that server") {
		t.Errorf("--repair of a served workspace: exit %d, %q", code, errs)
	}
	if code, _, errs := runCLI(t, context.Background(), "check"); code != exitBadConfig || !strings.Contains(errs, "give the lower layers") {
		t.Errorf("no layers: exit %d, %q", code, errs)
	}
}
