package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
)

// The metrics check: ovlnfs runs with --metrics-listen, /metrics is scraped just before
// and just after each of ovlnfs's fio jobs, and the deltas of the READ and WRITE
// counters (bytes and operations of the export) are held against what fio itself
// reported (io_bytes and total_ios, read and write). Nothing else talks to the server
// while a job runs, so every READ and WRITE between the two scrapes is fio's.

// fioCounts is what fio reported of one run, summed over its processes.
type fioCounts struct {
	readBytes, writeBytes int64
	readIOs, writeIOs     int64
}

// fioRun is one fio run's counts and the parameters the check's slack depends on.
type fioRun struct {
	fioCounts
	procs int
	bs    int64
	timed bool
}

// metricsDelta is the change of the export's READ/WRITE series between two scrapes.
type metricsDelta struct {
	readBytes, writeBytes float64
	readOps, writeOps     float64
	readErrs, writeErrs   float64
}

// metricsCheck is one ovlnfs fio job's comparison.
type metricsCheck struct {
	job   string
	round int
	fio   fioCounts
	m     metricsDelta
	// tolerance is the slack the comparison allowed; ok the verdict, why its
	// explanation when not
	tolerance string
	ok        bool
	why       string
}

// scrapeMetrics reads the text exposition of /metrics into series (name and labels as
// printed) -> value.
func scrapeMetrics(addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// sumSeries adds the values of the series named name whose labels include every one
// of want (`key="value"` strings).
func sumSeries(s map[string]float64, name string, want ...string) float64 {
	var t float64
	for k, v := range s {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		match := true
		for _, w := range want {
			if !strings.Contains(k, w) {
				match = false
				break
			}
		}
		if match {
			t += v
		}
	}
	return t
}

// exportLabel is the export the bench's ovlnfs serves (the command-line flags' export).
const exportLabel = `export="/"`

func delta(before, after map[string]float64) metricsDelta {
	d := func(name string, want ...string) float64 {
		return sumSeries(after, name, want...) - sumSeries(before, name, want...)
	}
	return metricsDelta{
		readBytes:  d("ovlnfs_nfs_read_bytes_total", exportLabel),
		writeBytes: d("ovlnfs_nfs_written_bytes_total", exportLabel),
		readOps:    d("ovlnfs_nfs_operations_total", exportLabel, `procedure="READ"`),
		writeOps:   d("ovlnfs_nfs_operations_total", exportLabel, `procedure="WRITE"`),
		readErrs:   d("ovlnfs_nfs_errors_total", exportLabel, `procedure="READ"`),
		writeErrs:  d("ovlnfs_nfs_errors_total", exportLabel, `procedure="WRITE"`),
	}
}

// opsSlack is how many more READ/WRITE calls than fio's completed I/Os the server may
// have answered per fio process in a time-based job: such a job could end with one
// request on the wire that the server answers but fio, past its runtime, does not count
// (iodepth 1, so at most one per process). Bytes get the same slack in units of the
// block size. Fewer calls or bytes at the server than fio reports is always a failure,
// and so is any call in a direction fio did not use.
const opsSlack = 1

// judge compares fio's counts with the metrics' deltas: exactly for jobs fio runs to a
// size, within opsSlack per process for time-based ones.
func judge(job string, round int, r fioRun, m metricsDelta) metricsCheck {
	f := r.fioCounts
	c := metricsCheck{job: job, round: round, fio: f, m: m, ok: true, tolerance: "exact"}
	slack := int64(0)
	if r.timed {
		slack = opsSlack * int64(r.procs)
		c.tolerance = fmt.Sprintf("+%d call/process (time-based)", opsSlack)
	}
	var why []string
	cmp := func(what string, fioV int64, mV float64, unit int64, used bool) {
		got := int64(mV)
		if float64(got) != mV {
			why = append(why, fmt.Sprintf("%s: metrics %v is not a whole number", what, mV))
			return
		}
		hi := fioV
		if used {
			hi += slack * unit
		}
		if got < fioV || got > hi {
			why = append(why, fmt.Sprintf("%s: fio %d, metrics %d (allowed %d to %d)", what, fioV, got, fioV, hi))
		}
	}
	reading, writing := f.readIOs > 0, f.writeIOs > 0
	cmp("read bytes", f.readBytes, m.readBytes, r.bs, reading)
	cmp("READ calls", f.readIOs, m.readOps, 1, reading)
	cmp("write bytes", f.writeBytes, m.writeBytes, r.bs, writing)
	cmp("WRITE calls", f.writeIOs, m.writeOps, 1, writing)
	if m.readErrs != 0 || m.writeErrs != 0 {
		why = append(why, fmt.Sprintf("errors: %v READ, %v WRITE", m.readErrs, m.writeErrs))
	}
	if len(why) > 0 {
		c.ok, c.why = false, strings.Join(why, "; ")
	}
	return c
}

func formatMetricsChecks(c *config, e env, checks []metricsCheck) string {
	var b strings.Builder
	b.WriteString("## Peers: /metrics against fio\n\n")
	fmt.Fprintf(&b, "Measured %s on this machine (%s); ovlnfs built from %s, run by bench/peers with `--metrics-listen=127.0.0.1:P`. ", e.date, e.machine, e.rev)
	b.WriteString("Reproduce (root): `go run ./bench/peers -rounds 1 -runtime 5s -jobs seqread,par4,randread,seqwrite,randwrite -tree-files 2000 -out COPY_OF_docs/benchmarks.md`, then copy this section over (every core run writes it).\n\n")
	b.WriteString("`/metrics` is scraped just before and just after each of ovlnfs's fio jobs (nothing else talks to the server meanwhile); the deltas of `ovlnfs_nfs_read_bytes_total`, `ovlnfs_nfs_written_bytes_total` and `ovlnfs_nfs_operations_total{procedure=\"READ\"|\"WRITE\"}` of the export are held against fio's own JSON report (`io_bytes`, `total_ios`, read and write, all processes). " +
		"Jobs fio runs to a size must agree exactly: fio's nfs engine makes one libnfs call per I/O, a 1 MiB I/O fits one READ or WRITE (ovlnfs's FSINFO rtmax and wtmax are 1 MiB), the engine lays out no file (the new file of seqwrite is written by the job itself) and the jobs have no ramp time. " +
		"Time-based jobs (randread, randwrite) are allowed 1 call (and 1 block) more per fio process at the server, in the direction the job uses: the request on the wire when the runtime ends could be answered and not counted by fio (iodepth 1); the runs so far matched exactly anyway. " +
		"The direction a job does not use must show no call at all (nothing reads behind fio's back: no read-ahead, no read for an open). More or fewer calls or bytes, a fractional count, or any READ or WRITE error fails the row, and a failed row makes the bench exit nonzero (after writing this table). bench/peers's `TestJudge` checks that each kind of mismatch fails.\n\n")
	fmt.Fprintf(&b, "Load average (1 min) %s at the start, %s at the end. The layers of this run are the core table's but for `-tree-files 2000` (no fio job touches the tree).\n\n", e.loadAtStart, benchenv.LoadAverage())
	b.WriteString("| job | round | fio bytes | metrics bytes | fio I/Os | metrics READ+WRITE calls | tolerance | agree |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range checks {
		verdict := "yes"
		if !k.ok {
			verdict = "**no**: " + k.why
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %d | %.0f | %s | %s |\n", k.job, k.round,
			k.fio.readBytes+k.fio.writeBytes, k.m.readBytes+k.m.writeBytes,
			k.fio.readIOs+k.fio.writeIOs, k.m.readOps+k.m.writeOps, k.tolerance, verdict)
	}
	return b.String()
}
