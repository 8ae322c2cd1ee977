package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Lines as Vault 1.21 writes them for a mount with accessor oauth_a8952d78, plus the same lines
// for another mount and a non-rollback request, which must be ignored.
const vaultLog = `2026-11-23T13:45:41.907Z [TRACE] secrets.oauth.oauth_a8952d78.oauth: handle request: transport=gRPC path="" status=started
2026-11-23T13:45:41.909Z [TRACE] secrets.oauth.oauth_a8952d78.oauth: handle request: transport=gRPC path="" status=finished err=<nil> took=2.032392ms
2026-11-23T13:45:42.000Z [TRACE] secrets.oauth.oauth_ffff0000.oauth: handle request: transport=gRPC path="" status=finished err=<nil> took=1s
2026-11-23T13:51:54.407Z [TRACE] secrets.oauth.oauth_a8952d78.oauth: handle request: transport=gRPC path=creds/hot status=finished err=<nil> took="260.848µs"
2026-11-23T13:52:41.500Z [TRACE] secrets.oauth.oauth_a8952d78.oauth: handle request: transport=gRPC path="" status=finished err=<nil> took="812.5µs"
`

func TestTickLogFollowsOneMountsRollbacks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault.log")
	// The last line arrives in two writes: nothing is parsed until it is complete.
	cut := len(vaultLog) - 20
	if err := os.WriteFile(path, []byte(vaultLog[:cut]), 0o600); err != nil {
		t.Fatal(err)
	}
	l := newTickLog(path, "oauth_a8952d78")
	evs, err := l.next()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].finished || !evs[1].finished || evs[1].took != 2032392*time.Nanosecond {
		t.Fatalf("first read: %+v", evs)
	}
	if got := evs[1].start(); !got.Equal(time.Date(2026, 11, 23, 13, 45, 41, 909000000-2032392, time.UTC)) {
		t.Fatalf("tick start = %s", got)
	}

	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(vaultLog[cut:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err = l.next()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || !evs[0].finished || evs[0].took != 812500*time.Nanosecond {
		t.Fatalf("second read: %+v", evs)
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	l := &latencies{}
	for i := 100; i >= 1; i-- {
		l.ok = append(l.ok, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0.001: time.Millisecond} {
		if got := l.percentile(p); got != want {
			t.Errorf("percentile(%v) = %s, want %s", p, got, want)
		}
	}
	if got := (&latencies{}).percentile(0.5); got != 0 {
		t.Errorf("percentile of nothing = %s, want 0", got)
	}
}
