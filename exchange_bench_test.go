package oauth

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// BenchmarkExchangeCacheHit is the hot path of exchange/: a subject token exchanged before, its
// answer cached in memory. Compare with BenchmarkCredsCacheHit.
func BenchmarkExchangeCacheHit(b *testing.B) {
	p, be, s := exchangeBackend(b)
	subject := testJWT("alice", time.Now().Add(24*time.Hour))
	exchangeAs(b, be, s, "obo", subject, "jwt")
	req := &logical.Request{Operation: logical.UpdateOperation, Path: "exchange/obo", Storage: s}
	requests := p.Requests()
	b.ReportAllocs()
	for b.Loop() {
		req.Data = map[string]any{"subject_token": subject, "subject_token_type": "jwt"}
		benchRead(b, be, req)
	}
	if n := p.Requests() - requests; n != 0 {
		b.Fatalf("cache hits sent %d requests to the provider", n)
	}
}

// BenchmarkExchangeChainedCredsCacheHit is a creds read of a role chained on another's token:
// the hot path plus the subject role's token check.
func BenchmarkExchangeChainedCredsCacheHit(b *testing.B) {
	p, be, s := exchangeBackend(b)
	readCreds(b, be, s, "orders", nil)
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/orders", Storage: s}
	requests := p.Requests()
	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, be, req)
	}
	if n := p.Requests() - requests; n != 0 {
		b.Fatalf("cache hits sent %d requests to the provider", n)
	}
}
