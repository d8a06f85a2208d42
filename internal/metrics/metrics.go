// Package metrics is the server's Prometheus metrics (prometheus/client_golang, served
// by promhttp on an opt-in address): per export, the NFS operations by procedure, the
// errors by status, the bytes read and written, each procedure's latency, the copy-ups
// (count, bytes, time) and the merged-listing cache's hits and misses; and the connected
// clients and the locks held. No label names a
// file or a client address, so the series stay bounded by the configuration.
//
// Files: metrics.go (Metrics, New, Observe, AddExport, AddGauge, Handler).
//
// Lock order: exports.mu is a leaf, held for a map operation; the client library's own
// locks are below it.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the server's series in a registry of its own (no global state).
type Metrics struct {
	reg      *prometheus.Registry
	ops      *prometheus.CounterVec
	errs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	read     *prometheus.CounterVec
	written  *prometheus.CounterVec
	exports  exportStats
}

// ExportStats is what an export reports of its union when scraped.
type ExportStats struct {
	CopyUps, CopyUpBytes uint64
	CopyUpTime           time.Duration
	ListingHits          uint64
	ListingMisses        uint64
	// Resolutions counts the file handles resolved by the path that found them (cache,
	// directory, hint, moves, connected) and those found by none (stale).
	Resolutions map[string]uint64
	// Quota says the export has a quota: its limits (0: none of that kind) and what is
	// counted against them (billyunion.FS.Quota).
	Quota                             bool
	QuotaLimitBytes, QuotaLimitInodes uint64
	QuotaUsedBytes, QuotaUsedInodes   uint64
}

// exportStats collects ExportStats of every export at scrape time.
type exportStats struct {
	mu    sync.Mutex
	stats map[string]registration // by export path; guarded by mu
	next  uint64                  // the last registration's id; guarded by mu

	copyUps, copyUpBytes, copyUpSeconds, listingHits, listingMisses, resolutions *prometheus.Desc
	quotaLimitBytes, quotaLimitInodes, quotaUsedBytes, quotaUsedInodes           *prometheus.Desc
}

type registration struct {
	id    uint64
	stats func() ExportStats
}

// New makes the metrics, with the Go runtime's and the process's own.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	labels := []string{"export", "procedure"}
	m.ops = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ovlnfs_nfs_operations_total",
		Help: "NFSv3 calls answered, by export and procedure."}, labels)
	m.errs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ovlnfs_nfs_errors_total",
		Help: "NFSv3 calls answered with a status other than NFS3_OK, by export, procedure and status."},
		append(labels, "status"))
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ovlnfs_nfs_operation_duration_seconds",
		Help:    "Time from the call read to the reply made, by export and procedure.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10)}, labels)
	m.read = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ovlnfs_nfs_read_bytes_total",
		Help: "Bytes READ returned, by export."}, []string{"export"})
	m.written = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ovlnfs_nfs_written_bytes_total",
		Help: "Bytes WRITE wrote, by export."}, []string{"export"})
	ex := &m.exports
	ex.stats = map[string]registration{}
	ex.copyUps = prometheus.NewDesc("ovlnfs_copyups_total", "Objects copied up into the upper, by export.", []string{"export"}, nil)
	ex.copyUpBytes = prometheus.NewDesc("ovlnfs_copyup_bytes_total", "Bytes of the regular files copied up, by export.", []string{"export"}, nil)
	ex.copyUpSeconds = prometheus.NewDesc("ovlnfs_copyup_seconds_total", "Time spent copying up, by export.", []string{"export"}, nil)
	ex.listingHits = prometheus.NewDesc("ovlnfs_listing_cache_hits_total", "Merged listings served from the cache, by export.", []string{"export"}, nil)
	ex.listingMisses = prometheus.NewDesc("ovlnfs_listing_cache_misses_total", "Merged listings built, by export.", []string{"export"}, nil)
	ex.quotaLimitBytes = prometheus.NewDesc("ovlnfs_quota_limit_bytes", "The upper's byte quota, by export (exports with one).", []string{"export"}, nil)
	ex.quotaLimitInodes = prometheus.NewDesc("ovlnfs_quota_limit_inodes", "The upper's inode quota, by export (exports with one).", []string{"export"}, nil)
	ex.quotaUsedBytes = prometheus.NewDesc("ovlnfs_quota_used_bytes", "Bytes counted against the upper's quota, by export (exports with a quota).", []string{"export"}, nil)
	ex.quotaUsedInodes = prometheus.NewDesc("ovlnfs_quota_used_inodes", "Inodes counted against the upper's quota, by export (exports with a quota).", []string{"export"}, nil)
	ex.resolutions = prometheus.NewDesc("ovlnfs_handle_resolutions_total", "File handles resolved, by export and the path that found them (stale: none).", []string{"export", "path"}, nil)
	m.reg.MustRegister(m.ops, m.errs, m.duration, m.read, m.written, ex,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe counts one answered call of export's procedure proc that took d: status is its
// nfsstat3 (0: NFS3_OK), read and written the bytes it moved.
func (m *Metrics) Observe(export, proc string, status uint32, d time.Duration, read, written int) {
	m.ops.WithLabelValues(export, proc).Inc()
	m.duration.WithLabelValues(export, proc).Observe(d.Seconds())
	if status != 0 {
		m.errs.WithLabelValues(export, proc, statusName(status)).Inc()
	}
	if read > 0 {
		m.read.WithLabelValues(export).Add(float64(read))
	}
	if written > 0 {
		m.written.WithLabelValues(export).Add(float64(written))
	}
}

// statusNames are the nfsstat3 names (RFC 1813) the errors are labelled with.
var statusNames = map[uint32]string{1: "PERM", 2: "NOENT", 5: "IO", 6: "NXIO", 13: "ACCES", 17: "EXIST",
	18: "XDEV", 19: "NODEV", 20: "NOTDIR", 21: "ISDIR", 22: "INVAL", 27: "FBIG", 28: "NOSPC", 30: "ROFS",
	31: "MLINK", 63: "NAMETOOLONG", 66: "NOTEMPTY", 69: "DQUOT", 70: "STALE", 71: "REMOTE",
	10001: "BADHANDLE", 10002: "NOT_SYNC", 10003: "BAD_COOKIE", 10004: "NOTSUPP", 10005: "TOOSMALL",
	10006: "SERVERFAULT", 10007: "BADTYPE", 10008: "JUKEBOX"}

func statusName(s uint32) string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return strconv.FormatUint(uint64(s), 10) // bounded: only statuses the server writes
}

// AddExport reports export's union statistics at every scrape, until the returned
// function is called (the export retired). Its counters stay, as counters do.
func (m *Metrics) AddExport(export string, stats func() ExportStats) (remove func()) {
	e := &m.exports
	e.mu.Lock()
	defer e.mu.Unlock()
	e.next++
	id := e.next
	e.stats[export] = registration{id: id, stats: stats}
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		// A reload may have put a successor at the same path since.
		if r, ok := e.stats[export]; ok && r.id == id {
			delete(e.stats, export)
		}
	}
}

// AddGauge reports f's value at every scrape as the gauge name (a server-wide figure:
// connected clients, locks held).
func (m *Metrics) AddGauge(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (e *exportStats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{e.copyUps, e.copyUpBytes, e.copyUpSeconds, e.listingHits, e.listingMisses, e.resolutions,
		e.quotaLimitBytes, e.quotaLimitInodes, e.quotaUsedBytes, e.quotaUsedInodes} {
		ch <- d
	}
}

func (e *exportStats) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	funcs := make(map[string]func() ExportStats, len(e.stats))
	for k, r := range e.stats {
		funcs[k] = r.stats
	}
	e.mu.Unlock()
	for export, f := range funcs {
		s := f()
		for _, c := range []struct {
			d *prometheus.Desc
			v float64
		}{{e.copyUps, float64(s.CopyUps)}, {e.copyUpBytes, float64(s.CopyUpBytes)}, {e.copyUpSeconds, s.CopyUpTime.Seconds()},
			{e.listingHits, float64(s.ListingHits)}, {e.listingMisses, float64(s.ListingMisses)}} {
			ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, c.v, export)
		}
		if s.Quota {
			ch <- prometheus.MustNewConstMetric(e.quotaUsedBytes, prometheus.GaugeValue, float64(s.QuotaUsedBytes), export)
			ch <- prometheus.MustNewConstMetric(e.quotaUsedInodes, prometheus.GaugeValue, float64(s.QuotaUsedInodes), export)
			if s.QuotaLimitBytes > 0 {
				ch <- prometheus.MustNewConstMetric(e.quotaLimitBytes, prometheus.GaugeValue, float64(s.QuotaLimitBytes), export)
			}
			if s.QuotaLimitInodes > 0 {
				ch <- prometheus.MustNewConstMetric(e.quotaLimitInodes, prometheus.GaugeValue, float64(s.QuotaLimitInodes), export)
			}
		}
		for path, n := range s.Resolutions {
			ch <- prometheus.MustNewConstMetric(e.resolutions, prometheus.CounterValue, float64(n), export, path)
		}
	}
}
