package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// tickEvent is one PeriodicFunc call of a mount as Vault's log shows it. Vault runs PeriodicFunc
// as a rollback request (path ""), and the SDK's plugin server logs every request it handles at
// trace level, the finished line with its duration:
//
//	2026-01-02T03:04:05.678Z [TRACE] secrets.oauth.oauth_1a2b3c4d.oauth: handle request: transport=gRPC path="" status=finished err=<nil> took=1.2s
type tickEvent struct {
	at       time.Time
	finished bool
	took     time.Duration
}

// start is when the tick began.
func (e tickEvent) start() time.Time { return e.at.Add(-e.took) }

// tickLog follows a Vault server log for the ticks of one mount.
type tickLog struct {
	path string
	re   *regexp.Regexp
	off  int64
	rest []byte // an incomplete last line, kept for the next read
}

func newTickLog(path, accessor string) *tickLog {
	return &tickLog{
		path: path,
		re: regexp.MustCompile(`^(\S+)\s+\[TRACE\]\s+\S*` + regexp.QuoteMeta(accessor) +
			`\S*: handle request: .*\bpath="" status=(started|finished)\b(?:.*\btook=(\S+))?`),
	}
}

// skip moves past everything logged so far.
func (l *tickLog) skip() error {
	fi, err := os.Stat(l.path)
	if err != nil {
		return err
	}
	l.off, l.rest = fi.Size(), nil
	return nil
}

// next returns the tick events logged since the last call.
func (l *tickLog) next() ([]tickEvent, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read-only: closing it cannot lose anything
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return nil, err
	}
	buf, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	l.off += int64(len(buf))
	buf = append(l.rest, buf...)
	end := bytes.LastIndexByte(buf, '\n') + 1
	l.rest = bytes.Clone(buf[end:])
	return parseTicks(l.re, buf[:end])
}

func parseTicks(re *regexp.Regexp, text []byte) ([]tickEvent, error) {
	var out []tickEvent
	for line := range bytes.Lines(text) {
		m := re.FindSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, string(m[1]))
		if err != nil {
			return nil, fmt.Errorf("log timestamp %q: %w", m[1], err)
		}
		ev := tickEvent{at: at, finished: string(m[2]) == "finished"}
		if ev.finished {
			// hclog quotes values with non-ASCII runes, such as "µs".
			if ev.took, err = time.ParseDuration(strings.Trim(string(m[3]), `"`)); err != nil {
				return nil, fmt.Errorf("tick duration %q: %w", m[3], err)
			}
		}
		out = append(out, ev)
	}
	return out, nil
}
