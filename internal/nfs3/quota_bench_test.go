package nfs3_test

import (
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// BenchmarkWriteQuota: one 4 KiB UNSTABLE WRITE per op through the in-process server over
// loopback TCP, one call at a time, without a quota ("off") and with one far from full
// ("on"), extending a file (every WRITE charged; the file starts again every 64 MiB) and
// overwriting one. The difference between off and on is the quota's cost per WRITE as a
// client sees it.
func BenchmarkWriteQuota(b *testing.B) {
	for _, q := range []string{"off", "on"} {
		for _, kind := range []string{"extend", "overwrite"} {
			b.Run(q+"/"+kind, func(b *testing.B) {
				opts := rpctest.Options{}
				if q == "on" {
					opts.QuotaBytes, opts.QuotaInodes = 1<<50, 1<<40
				}
				_, c, root := rpctest.StartMounted(b, opts)
				buf := make([]byte, 4096)
				const span = 64 << 20
				names := 0
				f := c.Create(root, "f0")
				if kind == "overwrite" {
					c.Write(f, span-4096, buf, rpctest.Unstable)
				}
				b.SetBytes(4096)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					off := uint64(i*4096) % span
					if kind == "extend" && off == 0 && i > 0 {
						names++
						f = c.Create(root, "f"+itoa(names))
					}
					c.Write(f, off, buf, rpctest.Unstable)
				}
			})
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
