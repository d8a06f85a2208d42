package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPprofListen: --pprof-listen serves the runtime's profiles while the server runs and
// stops with it; an address that is no HOST:PORT is refused before anything starts.
func TestPprofListen(t *testing.T) {
	l := newLayout(t)
	code, _, stderr := runCLI(t, context.Background(), "serve", "--lowerdir="+l.l1, "--pprof-listen=nowhere")
	if code != exitBadConfig || !strings.Contains(stderr, "--pprof-listen") {
		t.Errorf("bad address: exit %d, stderr %q", code, stderr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	port, pport := freePort(t), freePort(t)
	done := make(chan int, 1)
	var errOut bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--lowerdir=" + l.l1, "--listen=" + port, "--pprof-listen=" + pport},
			io.Discard, &errOut)
	}()
	url := "http://" + pport + "/debug/pprof/goroutine?debug=1"
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				body = string(b)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no profile at %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %.200q", body)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	if resp, err := http.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("profiles still served after the server stopped")
	}
}
