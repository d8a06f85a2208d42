package rpctest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// Layout is the directories of a test server's layers.
type Layout struct{ Root, L1, L2, Upper, Work string }

// Options say how StartServer prepares the layers and runs the server.
type Options struct {
	// Files are written into the top lower layer (L1), directories made as needed.
	Files map[string]string
	// Prepare may change the layout (and fill it) before the server starts.
	Prepare func(*Layout)
	// ReadOnly serves the lowers without an upper.
	ReadOnly bool
	// Debug logs at debug level (every call, every fsync before a reply).
	Debug bool
	// RedirectDir is the union's redirect_dir option ("" for its default, on).
	RedirectDir string
	// Index is the union's index option ("" for its default, on).
	Index string
	// DirCacheEntries bounds the listings (and the snapshots kept for paging clients) the
	// union keeps; 0 is its default.
	DirCacheEntries int
	// RequirePrivilegedPort refuses NFS calls from source ports of 1024 or more.
	RequirePrivilegedPort bool
	// RefuseAppleDouble refuses new "._name" and ".DS_Store" entries.
	RefuseAppleDouble bool
	// Unicode is the union's unicode option ("" for its default, exact).
	Unicode string
	// QuotaBytes and QuotaInodes limit the upper (0: no limit).
	QuotaBytes, QuotaInodes uint64
}

// Server is a running in-process server.
type Server struct {
	Addr   string
	Layout Layout
	Log    *LockedBuffer // the server's log
}

// StartServer runs a server on 127.0.0.1 over fresh layers (two lowers, an upper) and
// stops it at the test's cleanup, failing the test if it does not stop cleanly.
func StartServer(t testing.TB, opts Options) *Server {
	t.Helper()
	root := t.TempDir()
	l := Layout{Root: root, L1: filepath.Join(root, "l1"), L2: filepath.Join(root, "l2"),
		Upper: filepath.Join(root, "upper"), Work: filepath.Join(root, "work")}
	if opts.Prepare != nil {
		opts.Prepare(&l)
	}
	for _, d := range []string{l.L1, l.L2, l.Upper, l.Work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range opts.Files {
		p := filepath.Join(l.L1, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := &LockedBuffer{}
	level := slog.LevelInfo
	if opts.Debug {
		level = slog.LevelDebug
	}
	ex := server.Export{Path: "/", Lowers: []string{l.L1, l.L2}, Upper: l.Upper, Work: l.Work,
		RedirectDir: opts.RedirectDir, Index: opts.Index, RefuseAppleDouble: opts.RefuseAppleDouble,
		Unicode: opts.Unicode, QuotaBytes: opts.QuotaBytes, QuotaInodes: opts.QuotaInodes,
		Clients: clients.Everyone(opts.RequirePrivilegedPort)}
	if opts.ReadOnly {
		ex.Upper, ex.Work = "", ""
	}
	cfg := server.Config{Exports: []server.Export{ex},
		ActAsCaller: os.Geteuid() == 0, DirCacheEntries: opts.DirCacheEntries,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: level}))}
	return &Server{Addr: Serve(t, cfg), Layout: l, Log: log}
}

// Serve builds a server of cfg, serves it on 127.0.0.1 and stops it at the test's
// cleanup, failing the test if it does not stop cleanly; it returns the address.
func Serve(t testing.TB, cfg server.Config) string {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	return ServeBuilt(t, srv)
}

// ServeBuilt serves srv on 127.0.0.1 as Serve does.
func ServeBuilt(t testing.TB, srv *server.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return ln.Addr().String()
}

// LockedBuffer is a bytes.Buffer safe for a logger and a test to share.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Mounted dials the server and mounts "/": the client and the root handle.
func (s *Server) Mounted(t testing.TB) (*Client, []byte) {
	t.Helper()
	c := Dial(t, s.Addr)
	return c, c.MountRoot()
}

// StartMounted is StartServer, then Mounted: the server, a client and the root handle.
func StartMounted(t testing.TB, opts Options) (*Server, *Client, []byte) {
	t.Helper()
	s := StartServer(t, opts)
	c, root := s.Mounted(t)
	return s, c, root
}
