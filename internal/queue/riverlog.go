package queue

import (
	"context"
	"log/slog"
)

// riverLogger is the logger River gets: pgrelay's, marked
// component=river, without River's own lines below warn unless pgrelay
// logs at debug. River reports its routine work (client started,
// maintenance runs) at info, which would drown pgrelay's own info lines.
func riverLogger(l *slog.Logger) *slog.Logger {
	l = l.With("component", "river")
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return l
	}
	return slog.New(&levelFloor{h: l.Handler(), min: slog.LevelWarn})
}

// levelFloor drops the records of h below min.
type levelFloor struct {
	h   slog.Handler
	min slog.Level
}

func (f *levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.h.Enabled(ctx, l)
}

func (f *levelFloor) Handle(ctx context.Context, r slog.Record) error { return f.h.Handle(ctx, r) }

func (f *levelFloor) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelFloor{h: f.h.WithAttrs(attrs), min: f.min}
}

func (f *levelFloor) WithGroup(name string) slog.Handler {
	return &levelFloor{h: f.h.WithGroup(name), min: f.min}
}
