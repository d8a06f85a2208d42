package billyunion

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkQuotaWrite: the cost the quota adds to a WRITE. Each op is one 4 KiB WriteAt
// through a union file, as internal/nfs3 makes it for a WRITE, without a quota ("off")
// and with one far from full ("on"), overwriting a 64 MiB file ("overwrite": no growth,
// nothing charged) and extending one ("extend": every write charges 4 KiB; the file is
// truncated back to 0 every 64 MiB, one accounted truncate per 16384 writes). "parallel"
// runs GOMAXPROCS writers, each on a file of its own; "shared" as many on one file
// (the quota's lock of that inode serialises them). The layers are on tmpfs
// (/dev/shm), so the figures are the CPU cost, not a disk's.
func BenchmarkQuotaWrite(b *testing.B) {
	for _, q := range []string{"off", "on"} {
		for _, kind := range []string{"overwrite", "extend"} {
			for _, par := range []string{"serial", "parallel", "shared"} {
				b.Run(q+"/"+kind+"/"+par, func(b *testing.B) { benchQuotaWrite(b, q == "on", kind == "extend", par) })
			}
		}
	}
}

type writerAt interface {
	io.WriterAt
	Truncate(int64) error
}

func benchQuotaWrite(b *testing.B, quotaOn, extend bool, par string) {
	root, err := os.MkdirTemp("/dev/shm", "ovlnfs-bench-")
	if err != nil {
		b.Skip("no /dev/shm:", err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	for _, d := range []string{"l", "u", "w"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	opts := Options{Lowers: []string{filepath.Join(root, "l")}, Upper: filepath.Join(root, "u"),
		Work: filepath.Join(root, "w"), Index: "off"}
	if quotaOn {
		opts.QuotaBytes, opts.QuotaInodes = 1<<50, 1<<40
	}
	fs, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	const span = 64 << 20
	const size = 4 << 10
	open := func(name string) writerAt {
		f, err := fs.Create(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		w := f.(writerAt)
		if !extend {
			if err := w.Truncate(span); err != nil {
				b.Fatal(err)
			}
		}
		return w
	}
	buf := make([]byte, size)
	write := func(w writerAt, i int64) {
		off := (i * size) % span
		if extend && off == 0 && i > 0 {
			if err := w.Truncate(0); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(size)
	switch par {
	case "serial":
		w := open("f")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			write(w, int64(i))
		}
	case "parallel":
		var next atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			w := open("f" + strconv.FormatInt(next.Add(1), 10))
			var i int64
			for pb.Next() {
				write(w, i)
				i++
			}
		})
	case "shared":
		w := open("f")
		var next atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				// Without truncating: writers on one file extend it together.
				off := (next.Add(1) * size) % span
				if _, err := w.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuotaCharge: what the quota adds to each write by itself, without the write:
// quota.resize around an op that does nothing, on an upper file's descriptor (the inode
// number cached as a union file caches it): one fstat, the inode's lock and, when the
// write grows the file, a compare-and-swap and an add.
func BenchmarkQuotaCharge(b *testing.B) {
	for _, grow := range []bool{false, true} {
		name := "within"
		if grow {
			name = "growing"
		}
		b.Run(name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "f"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(1 << 20); err != nil {
				b.Fatal(err)
			}
			q := &quota{limitBytes: 1 << 62, writing: newLockTable()}
			var ino atomic.Uint64
			end := int64(4096)
			if grow {
				end = 2 << 20 // past the size: charged, and given back as the op writes nothing
			}
			nop := func() (int, error) { return 0, nil }
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := q.resize(f, &ino, end, 4096, false, nop); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
