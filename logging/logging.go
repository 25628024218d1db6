// Package logging builds pusher's zap logger: JSON lines on stdout with an
// RFC 3339 timestamp, the stable event name in "msg", and no sampling, because
// every message outcome must be logged.
package logging

import (
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config tunes the logger. Zero values mean the documented default.
type Config struct {
	// Level is debug, info, warn or error; default info.
	Level string
	// BufferSize, when positive, buffers output up to that many bytes and
	// flushes every FlushInterval, so that a busy node does not pay one
	// write(2) per log line. Zero writes every line at once.
	BufferSize int
	// FlushInterval bounds how long a buffered line may wait; default 1s.
	FlushInterval time.Duration
}

// New returns a logger writing JSON to w, and a close func that flushes
// buffered lines and stops the flusher; main defers it. The caller owns w.
func New(w io.Writer, cfg Config) (*zap.Logger, func() error, error) {
	level, err := zapcore.ParseLevel(orDefault(cfg.Level, "info"))
	if err != nil {
		return nil, nil, fmt.Errorf("log level %q: %w", cfg.Level, err)
	}
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		CallerKey:      zapcore.OmitKey,
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     newTimestamps().encode,
		EncodeDuration: zapcore.SecondsDurationEncoder,
		EncodeName:     zapcore.FullNameEncoder,
	})
	ws := zapcore.AddSync(w)
	closeFn := func() error { return ws.Sync() }
	if cfg.BufferSize > 0 {
		flush := cfg.FlushInterval
		if flush <= 0 {
			flush = time.Second
		}
		bws := &zapcore.BufferedWriteSyncer{WS: ws, Size: cfg.BufferSize, FlushInterval: flush}
		ws = bws
		closeFn = bws.Stop
	}
	core := zapcore.NewCore(enc, ws, level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), closeFn, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
