package main

import (
	"strings"
	"testing"
)

// TestJudge: the metrics check passes on agreeing counts and fails on each kind of
// mismatch, so a wrong counter cannot go unnoticed in the benchmark.
func TestJudge(t *testing.T) {
	sized := fioRun{fioCounts: fioCounts{readBytes: 1 << 30, readIOs: 1024}, procs: 1, bs: 1 << 20}
	timed := fioRun{fioCounts: fioCounts{writeBytes: 4096 * 100, writeIOs: 100}, procs: 2, bs: 4096, timed: true}
	agree := metricsDelta{readBytes: 1 << 30, readOps: 1024}
	agreeTimed := metricsDelta{writeBytes: 4096 * 100, writeOps: 100}
	for _, c := range []struct {
		name string
		run  fioRun
		m    metricsDelta
		ok   bool
		why  string
	}{
		{"sized, equal", sized, agree, true, ""},
		{"sized, one READ more", sized, metricsDelta{readBytes: 1<<30 + 1<<20, readOps: 1025}, false, "READ calls: fio 1024, metrics 1025"},
		{"sized, bytes short", sized, metricsDelta{readBytes: 1<<30 - 1, readOps: 1024}, false, "read bytes"},
		{"sized, a WRITE", sized, metricsDelta{readBytes: 1 << 30, readOps: 1024, writeOps: 1, writeBytes: 10}, false, "WRITE calls"},
		{"sized, an error", sized, metricsDelta{readBytes: 1 << 30, readOps: 1024, readErrs: 1}, false, "errors"},
		{"sized, fractional", sized, metricsDelta{readBytes: 1<<30 + 0.5, readOps: 1024}, false, "whole number"},
		{"timed, equal", timed, agreeTimed, true, ""},
		{"timed, one call per process more", timed, metricsDelta{writeBytes: 4096 * 102, writeOps: 102}, true, ""},
		{"timed, three more", timed, metricsDelta{writeBytes: 4096 * 103, writeOps: 103}, false, "WRITE calls: fio 100, metrics 103"},
		{"timed, fewer", timed, metricsDelta{writeBytes: 4096 * 99, writeOps: 99}, false, "WRITE calls"},
		{"timed, a READ in a write job", timed, metricsDelta{writeBytes: 4096 * 100, writeOps: 100, readOps: 1, readBytes: 4096}, false, "READ calls"},
	} {
		k := judge("j", 0, c.run, c.m)
		if k.ok != c.ok || !strings.Contains(k.why, c.why) {
			t.Errorf("%s: ok=%v why=%q; want ok=%v why containing %q", c.name, k.ok, k.why, c.ok, c.why)
		}
	}
}

// TestDelta: the deltas are the export's READ and WRITE series only.
func TestDelta(t *testing.T) {
	before := map[string]float64{
		`ovlnfs_nfs_operations_total{export="/",procedure="READ"}`:  10,
		`ovlnfs_nfs_operations_total{export="/",procedure="WRITE"}`: 1,
		`ovlnfs_nfs_read_bytes_total{export="/"}`:                   100,
	}
	after := map[string]float64{
		`ovlnfs_nfs_operations_total{export="/",procedure="READ"}`:         15,
		`ovlnfs_nfs_operations_total{export="/",procedure="WRITE"}`:        4,
		`ovlnfs_nfs_operations_total{export="/",procedure="GETATTR"}`:      7,
		`ovlnfs_nfs_operations_total{export="/x",procedure="READ"}`:        9,
		`ovlnfs_nfs_read_bytes_total{export="/"}`:                          600,
		`ovlnfs_nfs_written_bytes_total{export="/"}`:                       30,
		`ovlnfs_nfs_errors_total{export="/",procedure="READ",status="IO"}`: 2,
	}
	d := delta(before, after)
	want := metricsDelta{readBytes: 500, writeBytes: 30, readOps: 5, writeOps: 3, readErrs: 2}
	if d != want {
		t.Errorf("delta %+v, want %+v", d, want)
	}
}
