package testkit

import (
	"bytes"
	"strings"
	"sync"
)

// logBufferMax bounds a LogBuffer: enough to explain a failure, without a
// chatty test (a fuzzer) growing it without limit.
const logBufferMax = 1 << 20

// LogBuffer collects a logger's output (slog.NewTextHandler(&buf, nil))
// for a test to read while other goroutines still write to it. It keeps the
// first MiB and drops the rest.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > logBufferMax {
		return len(p), nil
	}
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Contains reports whether sub has been written.
func (l *LogBuffer) Contains(sub string) bool { return strings.Contains(l.String(), sub) }

// Reset forgets what was written.
func (l *LogBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
