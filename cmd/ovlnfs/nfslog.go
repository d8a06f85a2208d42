package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	nfs "github.com/willscott/go-nfs"
)

// goNFSLogger routes go-nfs's own log lines into the server's slog logger, so the process
// writes one log format. go-nfs's TRACE lines (one per request) are dropped: the front end
// traces every call itself with its outcome and duration.
type goNFSLogger struct {
	logger *slog.Logger
	level  nfs.LogLevel
}

func newGoNFSLogger(logger *slog.Logger) *goNFSLogger {
	l := &goNFSLogger{logger: logger.With("component", "go-nfs"), level: nfs.InfoLevel}
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		l.level = nfs.DebugLevel
	}
	return l
}

// exclusiveCreateNotice is what go-nfs logs at ERROR level each time it answers a CREATE
// in EXCLUSIVE mode with NOTSUPP. Clients fall back to GUARDED creates (git's lock files
// hit this constantly), so it is no error of the server's.
const exclusiveCreateNotice = "failing create to indicate lack of support for 'exclusive' mode"

func (l *goNFSLogger) log(level nfs.LogLevel, msg string) {
	if strings.HasPrefix(msg, exclusiveCreateNotice) {
		level = nfs.DebugLevel
	}
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

func (l *goNFSLogger) SetLevel(level nfs.LogLevel) { l.level = level }
func (l *goNFSLogger) GetLevel() nfs.LogLevel      { return l.level }
func (l *goNFSLogger) ParseLevel(s string) (nfs.LogLevel, error) {
	var levels = map[string]nfs.LogLevel{"panic": nfs.PanicLevel, "fatal": nfs.FatalLevel,
		"error": nfs.ErrorLevel, "warn": nfs.WarnLevel, "info": nfs.InfoLevel,
		"debug": nfs.DebugLevel, "trace": nfs.TraceLevel}
	if lv, ok := levels[strings.ToLower(s)]; ok {
		return lv, nil
	}
	return nfs.InfoLevel, fmt.Errorf("unknown log level %q", s)
}

// Panic and Fatal only log: a library's bad day must not take the server down.
func (l *goNFSLogger) Panic(args ...any) { l.log(nfs.PanicLevel, fmt.Sprint(args...)) }
func (l *goNFSLogger) Fatal(args ...any) { l.log(nfs.FatalLevel, fmt.Sprint(args...)) }
func (l *goNFSLogger) Error(args ...any) { l.log(nfs.ErrorLevel, fmt.Sprint(args...)) }
func (l *goNFSLogger) Warn(args ...any)  { l.log(nfs.WarnLevel, fmt.Sprint(args...)) }
func (l *goNFSLogger) Info(args ...any)  { l.log(nfs.InfoLevel, fmt.Sprint(args...)) }
func (l *goNFSLogger) Debug(args ...any) { l.log(nfs.DebugLevel, fmt.Sprint(args...)) }
func (l *goNFSLogger) Trace(args ...any) {}
func (l *goNFSLogger) Print(args ...any) { l.log(nfs.InfoLevel, fmt.Sprint(args...)) }

func (l *goNFSLogger) Panicf(f string, args ...any) { l.log(nfs.PanicLevel, fmt.Sprintf(f, args...)) }
func (l *goNFSLogger) Fatalf(f string, args ...any) { l.log(nfs.FatalLevel, fmt.Sprintf(f, args...)) }
func (l *goNFSLogger) Errorf(f string, args ...any) { l.log(nfs.ErrorLevel, fmt.Sprintf(f, args...)) }
func (l *goNFSLogger) Warnf(f string, args ...any)  { l.log(nfs.WarnLevel, fmt.Sprintf(f, args...)) }
func (l *goNFSLogger) Infof(f string, args ...any)  { l.log(nfs.InfoLevel, fmt.Sprintf(f, args...)) }
func (l *goNFSLogger) Debugf(f string, args ...any) { l.log(nfs.DebugLevel, fmt.Sprintf(f, args...)) }
func (l *goNFSLogger) Tracef(string, ...any)        {}
func (l *goNFSLogger) Printf(f string, args ...any) { l.log(nfs.InfoLevel, fmt.Sprintf(f, args...)) }
