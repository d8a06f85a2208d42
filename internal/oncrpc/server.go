package oncrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// MaxInFlight bounds the calls of one client connection being handled at once. When all
// are busy the server stops reading that client, so TCP pushes back.
const MaxInFlight = 32

// Config is what a Server serves.
type Config struct {
	Programs []Program
	Logger   *slog.Logger
}

// Server answers the calls of the programs it was built with, on every listener Serve is
// given.
type Server struct {
	table   *dispatchTable
	logger  *slog.Logger
	records bufferPool // memory of the call records being read and handled
	replies replyRecycler

	mu       sync.Mutex // guards conns, sockets and draining
	conns    map[*conn]struct{}
	sockets  map[*datagramSocket]struct{} // UDP sockets being served
	draining bool
	inflight sync.WaitGroup // calls read and not yet answered
}

// New builds a server; it fails on a table that registers a program version twice.
func New(cfg Config) (*Server, error) {
	t, err := newDispatchTable(cfg.Programs)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{table: t, logger: logger, conns: make(map[*conn]struct{}),
		sockets: make(map[*datagramSocket]struct{})}, nil
}

// Serve accepts clients on l until l is closed or fails, and returns why it stopped
// (net.ErrClosed after Close). Connections accepted stay served until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		cc := newConn(s, c)
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[cc] = struct{}{}
		s.mu.Unlock()
		s.logger.Debug("connection opened", "client", c.RemoteAddr().String())
		go cc.serve()
	}
}

// Shutdown stops reading new calls on every connection and UDP socket, waits (bounded by
// ctx) for the replies of calls already read, then closes the connections. Close the
// listeners first; close the UDP sockets after (replies go out through them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	sockets := make([]*datagramSocket, 0, len(s.sockets))
	for d := range s.sockets {
		sockets = append(sockets, d)
	}
	s.mu.Unlock()

	// Wake readers blocked waiting for a next call; they see draining and stop.
	for _, c := range conns {
		_ = c.nc.SetReadDeadline(time.Now())
	}
	for _, d := range sockets {
		d.wake()
	}
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("calls still in flight: %w", ctx.Err())
	}
	for _, c := range conns {
		c.close()
	}
	return err
}

// begin counts a call in flight unless the server is draining.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// Connections is the number of TCP connections being served.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
