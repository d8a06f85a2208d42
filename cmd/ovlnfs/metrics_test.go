package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// scrape reads /metrics into series -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return out
}

// TestMetrics: the counters of /metrics add up to the work a client did: WRITE and READ
// calls and their bytes, an error by its status, a copy-up and its bytes.
func TestMetrics(t *testing.T) {
	l := newLayout(t)
	lowerFile := strings.Repeat("x", 1000)
	if err := os.WriteFile(filepath.Join(l.l1, "lower.txt"), []byte(lowerFile), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startServe(t, "--lowerdir="+l.l1, "--upperdir="+l.upper, "--workdir="+l.work, "--listen=127.0.0.1:0",
		"--portmap=off", "--nlm=off", "--metrics-listen=127.0.0.1:0")
	c := rpctest.Dial(t, r.field("listen"))
	root := c.MountRoot()
	f := c.Create(root, "new")
	for i := range 10 {
		c.Write(f, uint64(i*100), []byte(strings.Repeat("y", 100)), rpctest.FileSync)
	}
	for range 3 {
		c.Read(f, 0, 1000)
	}
	if st, _ := c.NFS(nfs3.ProcLookup, rpctest.DirOp(root, "missing")); st != nfs3.StatusNoEnt {
		t.Fatalf("LOOKUP missing: %d", st)
	}
	c.Write(c.Lookup(root, "lower.txt"), 1000, []byte("z"), rpctest.FileSync) // a copy-up of 1000 bytes
	m := scrape(t, r.field("metrics"))
	for series, want := range map[string]float64{
		`ovlnfs_nfs_operations_total{export="/",procedure="WRITE"}`:                 11,
		`ovlnfs_nfs_operations_total{export="/",procedure="READ"}`:                  3,
		`ovlnfs_nfs_written_bytes_total{export="/"}`:                                1001,
		`ovlnfs_nfs_read_bytes_total{export="/"}`:                                   3000,
		`ovlnfs_nfs_errors_total{export="/",procedure="LOOKUP",status="NOENT"}`:     1,
		`ovlnfs_copyups_total{export="/"}`:                                          1,
		`ovlnfs_copyup_bytes_total{export="/"}`:                                     1000,
		`ovlnfs_nfs_operation_duration_seconds_count{export="/",procedure="WRITE"}`: 11,
		`ovlnfs_nfs_connections`:                                                    1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if m[`ovlnfs_handle_resolutions_total{export="/",path="cache"}`] < 10 {
		t.Errorf("handle resolutions from the cache: %v", m[`ovlnfs_handle_resolutions_total{export="/",path="cache"}`])
	}
	if m[`ovlnfs_copyup_seconds_total{export="/"}`] <= 0 {
		t.Error("no copy-up time counted")
	}
}

// TestQuotaMetrics: an export with a quota reports its limits and usage; one without, none.
func TestQuotaMetrics(t *testing.T) {
	l := newLayout(t)
	r := startServe(t, "--lowerdir="+l.l1, "--upperdir="+l.upper, "--workdir="+l.work, "--listen=127.0.0.1:0",
		"--portmap=off", "--nlm=off", "--metrics-listen=127.0.0.1:0", "-o", "quota_bytes=1M,quota_inodes=100")
	c := rpctest.Dial(t, r.field("listen"))
	root := c.MountRoot()
	before := scrape(t, r.field("metrics"))
	f := c.Create(root, "new")
	c.Write(f, 0, make([]byte, 5000), rpctest.FileSync)
	if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(f, 5000, make([]byte, 1<<20), rpctest.FileSync)); st != nfs3.StatusDQuot {
		t.Fatalf("WRITE past the quota: status %d", st)
	}
	m := scrape(t, r.field("metrics"))
	for series, want := range map[string]float64{
		`ovlnfs_quota_limit_bytes{export="/"}`:                                 1 << 20,
		`ovlnfs_quota_limit_inodes{export="/"}`:                                100,
		`ovlnfs_quota_used_bytes{export="/"}`:                                  5000,
		`ovlnfs_quota_used_inodes{export="/"}`:                                 before[`ovlnfs_quota_used_inodes{export="/"}`] + 1,
		`ovlnfs_nfs_errors_total{export="/",procedure="WRITE",status="DQUOT"}`: 1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
}
