package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// servePprof serves Go's runtime profiles on l until the returned stop is called: the
// evidence to look at before optimising anything
// (`go tool pprof http://ADDR/debug/pprof/profile?seconds=30`). Its own mux keeps the
// handlers off http.DefaultServeMux.
func servePprof(l net.Listener, logger *slog.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return serveHTTP(l, mux, "profile", logger)
}

// serveMetrics serves the Prometheus metrics at /metrics on l until stop is called.
func serveMetrics(l net.Listener, h http.Handler, logger *slog.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	return serveHTTP(l, mux, "metrics", logger)
}

// serveHTTP serves mux on l until the returned stop is called.
func serveHTTP(l net.Listener, mux *http.ServeMux, what string, logger *slog.Logger) (stop func()) {
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(what+" server failed", "err", err)
		}
	}()
	// Close, not the listener alone: a client's keep-alive connection would outlive it.
	return func() { _ = srv.Close() }
}
