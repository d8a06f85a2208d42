package gonfs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	nfs "github.com/willscott/go-nfs"
)

// logAdapter routes go-nfs's own log lines into the server's slog logger, so the process
// writes one log format. go-nfs's TRACE lines (one per call) are dropped: package oncrpc
// traces every call itself with its outcome and duration.
type logAdapter struct {
	logger *slog.Logger
	level  nfs.LogLevel
}

func newLogAdapter(logger *slog.Logger) *logAdapter {
	l := &logAdapter{logger: logger.With("component", "go-nfs"), level: nfs.InfoLevel}
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		l.level = nfs.DebugLevel
	}
	return l
}

func (l *logAdapter) log(level nfs.LogLevel, msg string) {
	if level > l.level {
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
	l.logger.Log(context.Background(), sl, strings.TrimSpace(msg))
}

func (l *logAdapter) SetLevel(level nfs.LogLevel) { l.level = level }
func (l *logAdapter) GetLevel() nfs.LogLevel      { return l.level }
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
