package gonfs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	nfs "github.com/willscott/go-nfs"
)

// logAdapter routes go-nfs's own log lines into the server's slog logger, so the process
// writes one log format. go-nfs's TRACE lines (one per call) are dropped: package oncrpc
// traces every call itself with its outcome and duration.
//
// go-nfs keeps its logger in a package variable that its connections read while they
// run, so it is set once per process (goNFSLog): a bridge made later only points the one
// adapter at its own logger (the last bridge made logs go-nfs's lines), atomically, which
// a second server in one process (as tests run) needs to be free of data races.
type logAdapter struct {
	dest atomic.Pointer[logDest]
}

// logDest is where go-nfs's lines go, and from which level on.
type logDest struct {
	logger *slog.Logger
	level  nfs.LogLevel
}

var (
	goNFSLog     logAdapter
	goNFSLogOnce sync.Once
)

// routeGoNFSLog sends go-nfs's lines to logger from now on.
func routeGoNFSLog(logger *slog.Logger) {
	d := &logDest{logger: logger.With("component", "go-nfs"), level: nfs.InfoLevel}
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		d.level = nfs.DebugLevel
	}
	goNFSLog.dest.Store(d)
	goNFSLogOnce.Do(func() { nfs.SetLogger(&goNFSLog) })
}

func (l *logAdapter) log(level nfs.LogLevel, msg string) {
	d := l.dest.Load()
	if d == nil || level > d.level {
		return
	}
	var sl slog.Level
	switch {
	case level <= nfs.ErrorLevel:
		sl = slog.LevelError
	case level == nfs.WarnLevel:
		sl = slog.LevelWarn
	case level == nfs.InfoLevel:
		sl = slog.LevelInfo
	default:
		sl = slog.LevelDebug
	}
	d.logger.Log(context.Background(), sl, strings.TrimSpace(msg))
}

func (l *logAdapter) SetLevel(level nfs.LogLevel) {
	if d := l.dest.Load(); d != nil {
		l.dest.Store(&logDest{logger: d.logger, level: level})
	}
}

func (l *logAdapter) GetLevel() nfs.LogLevel {
	if d := l.dest.Load(); d != nil {
		return d.level
	}
	return nfs.InfoLevel
}
func (l *logAdapter) ParseLevel(s string) (nfs.LogLevel, error) {
	switch strings.ToLower(s) {
	case "panic":
		return nfs.PanicLevel, nil
	case "fatal":
		return nfs.FatalLevel, nil
	case "error":
		return nfs.ErrorLevel, nil
	case "warn":
		return nfs.WarnLevel, nil
	case "info":
		return nfs.InfoLevel, nil
	case "debug":
		return nfs.DebugLevel, nil
	case "trace":
		return nfs.TraceLevel, nil
	}
	return nfs.InfoLevel, fmt.Errorf("unknown log level %q", s)
}

// Panic and Fatal only log: a library's bad day must not take the server down.
func (l *logAdapter) Panic(args ...any) { l.log(nfs.PanicLevel, fmt.Sprint(args...)) }
func (l *logAdapter) Fatal(args ...any) { l.log(nfs.FatalLevel, fmt.Sprint(args...)) }
func (l *logAdapter) Error(args ...any) { l.log(nfs.ErrorLevel, fmt.Sprint(args...)) }
func (l *logAdapter) Warn(args ...any)  { l.log(nfs.WarnLevel, fmt.Sprint(args...)) }
func (l *logAdapter) Info(args ...any)  { l.log(nfs.InfoLevel, fmt.Sprint(args...)) }
func (l *logAdapter) Debug(args ...any) { l.log(nfs.DebugLevel, fmt.Sprint(args...)) }
func (l *logAdapter) Trace(...any)      {}
func (l *logAdapter) Print(args ...any) { l.log(nfs.InfoLevel, fmt.Sprint(args...)) }

func (l *logAdapter) Panicf(f string, args ...any) { l.log(nfs.PanicLevel, fmt.Sprintf(f, args...)) }
func (l *logAdapter) Fatalf(f string, args ...any) { l.log(nfs.FatalLevel, fmt.Sprintf(f, args...)) }
func (l *logAdapter) Errorf(f string, args ...any) { l.log(nfs.ErrorLevel, fmt.Sprintf(f, args...)) }
func (l *logAdapter) Warnf(f string, args ...any)  { l.log(nfs.WarnLevel, fmt.Sprintf(f, args...)) }
func (l *logAdapter) Infof(f string, args ...any)  { l.log(nfs.InfoLevel, fmt.Sprintf(f, args...)) }
func (l *logAdapter) Debugf(f string, args ...any) { l.log(nfs.DebugLevel, fmt.Sprintf(f, args...)) }
func (l *logAdapter) Tracef(string, ...any)        {}
func (l *logAdapter) Printf(f string, args ...any) { l.log(nfs.InfoLevel, fmt.Sprintf(f, args...)) }
