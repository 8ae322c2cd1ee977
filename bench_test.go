package oauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Benchmarks of the creds read path inside the backend, with in-memory storage: what the plugin
// itself adds to a read, without Vault's HTTP, plugin RPC and lease handling (cmd/oauth-bench
// measures those). `make bench` runs them with -benchmem.

// BenchmarkCredsCacheHit is the hot path: a cached token with most of its life left.
func BenchmarkCredsCacheHit(b *testing.B) {
	p := newProviderWithClient(b)
	be, s := configured(b, p)
	readCreds(b, be, s, "app", nil)
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/app", Storage: s}
	grants := p.Requests()

	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, be, req)
	}
	if p.Requests() != grants {
		b.Fatalf("cache hits sent %d requests to the provider", p.Requests()-grants)
	}
}

// BenchmarkCredsCacheHitParallel is the hot path under GOMAXPROCS concurrent readers of one role.
func BenchmarkCredsCacheHitParallel(b *testing.B) {
	p := newProviderWithClient(b)
	be, s := configured(b, p)
	readCreds(b, be, s, "app", nil)

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/app", Storage: s}
		for pb.Next() {
			if err := credsRead(be, req); err != nil {
				b.Error(err) // FailNow is for the benchmark's own goroutine only
				return
			}
		}
	})
}

// BenchmarkCredsCacheMiss performs a grant against an httptest provider on every read:
// min_seconds above the token lifetime makes every cached token too short.
func BenchmarkCredsCacheMiss(b *testing.B) {
	p := newProviderWithClient(b)
	p.TokenTTL = time.Hour
	be, s := configured(b, p)
	data := map[string]any{"min_seconds": int(2 * p.TokenTTL / time.Second)}
	before := p.Requests()

	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, be, &logical.Request{Operation: logical.ReadOperation, Path: "creds/app", Storage: s, Data: data})
	}
	b.StopTimer()
	if grants := p.Requests() - before; grants != int64(b.N) {
		b.Fatalf("%d reads sent %d requests to the provider, want one each", b.N, grants)
	}
}

func benchRead(b *testing.B, be *backend, req *logical.Request) {
	if err := credsRead(be, req); err != nil {
		b.Fatal(err)
	}
}

func credsRead(be *backend, req *logical.Request) error {
	resp, err := be.HandleRequest(context.Background(), req)
	if err != nil {
		return err
	}
	if resp == nil || resp.IsError() || resp.Data["access_token"] == "" {
		return fmt.Errorf("creds read failed: %#v", resp)
	}
	return nil
}
