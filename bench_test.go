package oauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// Benchmarks of the creds read path inside the backend, with in-memory storage: what the plugin
// itself adds to a read, without Vault's HTTP, plugin RPC and lease handling (cmd/oauth-bench
// measures those). `make bench` runs them with -benchmem.

// BenchmarkCredsCacheHit is the hot path: a cached token with most of its life left.
func BenchmarkCredsCacheHit(b *testing.B) {
	p := newProviderWithClient(b)
	be, s := configured(b, p)
	readCreds(b, be, s, "app", nil)
	benchCacheHit(b, be, s, p.Requests)
}

// BenchmarkCredsCacheHitNoLease is the hot path of a lease=false role: the same cached token,
// answered without a lease but with ttl and rotation_period. Compare with BenchmarkCredsCacheHit
// (scripts/bench.sh prints the ratio).
func BenchmarkCredsCacheHitNoLease(b *testing.B) {
	p := newProviderWithClient(b)
	be, s := configuredNoLease(b, p)
	benchCacheHit(b, be, s, p.Requests)
}

// benchCacheHit reads creds/app serially and checks that no read reached the provider.
func benchCacheHit(b *testing.B, be *backend, s logical.Storage, providerRequests func() int64) {
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/app", Storage: s}
	grants := providerRequests()
	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, be, req)
	}
	if n := providerRequests() - grants; n != 0 {
		b.Fatalf("cache hits sent %d requests to the provider", n)
	}
}

// BenchmarkCredsCacheHitNoLeaseParallel is BenchmarkCredsCacheHitParallel for a lease=false role.
func BenchmarkCredsCacheHitNoLeaseParallel(b *testing.B) {
	be, s := configuredNoLease(b, newProviderWithClient(b))
	benchCacheHitParallel(b, be, s)
}

// configuredNoLease is configured with role "app" set to lease=false and its token cached; it
// checks that the answer is indeed lease-less.
func configuredNoLease(b *testing.B, p interface{ TokenURL() string }) (*backend, *faultyStorage) {
	b.Helper()
	be, s := newTestBackend(b)
	mustSucceed(b, request(b, be, s, logical.UpdateOperation, "config", map[string]any{
		"token_url": p.TokenURL(), "client_id": testClientID, "client_secret": testClientSecret,
	}))
	mustSucceed(b, request(b, be, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read,write", "lease": false}))
	resp := readCreds(b, be, s, "app", nil)
	if resp.Secret != nil || resp.Data["ttl"] == nil || resp.Data["rotation_period"] == nil {
		b.Fatalf("lease=false answered a lease or no ttl/rotation_period: secret %v, data keys %v", resp.Secret, resp.Data)
	}
	return be, s
}

// BenchmarkCredsCacheHitParallel is the hot path under GOMAXPROCS concurrent readers of one role.
func BenchmarkCredsCacheHitParallel(b *testing.B) {
	p := newProviderWithClient(b)
	be, s := configured(b, p)
	readCreds(b, be, s, "app", nil)
	benchCacheHitParallel(b, be, s)
}

func benchCacheHitParallel(b *testing.B, be *backend, s logical.Storage) {
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

// BenchmarkCredsCacheMiss performs a grant against an httptest provider on every read: before
// each read the backend's clock moves past the cached token's expiry. (Asking min_seconds above
// the token lifetime no longer does: a read that forces a new token for a token that still
// serves is limited to one per forcedGrantInterval.)
func BenchmarkCredsCacheMiss(b *testing.B) {
	p := newProviderWithClient(b)
	p.TokenTTL = time.Hour
	be, s := configured(b, p)
	clk := clockOf(be)
	clk.Pin(time.Now())
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/app", Storage: s}
	before := p.Requests()

	b.ReportAllocs()
	for b.Loop() {
		clk.Advance(p.TokenTTL + time.Second)
		benchRead(b, be, req)
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

// metricsRoles is how many roles BenchmarkMetricsScrape puts in memory storage, each with a token.
const metricsRoles = 1000

// BenchmarkMetricsScrape is one read of <mount>/metrics with 1,000 roles that have tokens, as
// Vault would route it: warm (roles and tokens cached from an earlier scrape) and cold (a new
// backend over the same storage, as after a plugin start that has not planned the refresh queue
// yet: every role and token is loaded from storage), with and without per-role labels. It
// reports the body size (bytes/scrape) and the time per role (ns/role).
func BenchmarkMetricsScrape(b *testing.B) {
	for _, labels := range []bool{true, false} {
		be, s := metricsMount(b, labels)
		b.Run(fmt.Sprintf("roles=%d/labels=%t/warm", metricsRoles, labels), func(b *testing.B) {
			benchScrape(b, be, s, nil)
		})
		b.Run(fmt.Sprintf("roles=%d/labels=%t/cold", metricsRoles, labels), func(b *testing.B) {
			benchScrape(b, nil, s, func() *backend {
				fresh := newBackend(&testClock{}, oauthclient.NewClient)
				conf := logical.TestBackendConfig()
				conf.StorageView = s
				if err := fresh.Setup(context.Background(), conf); err != nil {
					b.Fatal(err)
				}
				return fresh
			})
		})
	}
}

// metricsMount is a backend with metricsRoles roles, each read once (one grant and one creds
// read counted per role), with metrics_role_labels set from the start.
func metricsMount(b *testing.B, labels bool) (*backend, *faultyStorage) {
	b.Helper()
	p := newProviderWithClient(b)
	be, s := configured(b, p)
	mustSucceed(b, request(b, be, s, logical.UpdateOperation, "config", map[string]any{"metrics_role_labels": labels}))
	for i := range metricsRoles {
		name := fmt.Sprintf("r-%04d", i)
		mustSucceed(b, request(b, be, s, logical.UpdateOperation, "roles/"+name, map[string]any{"scopes": "read"}))
		readCreds(b, be, s, name, nil)
	}
	return be, s
}

// benchScrape scrapes be (warm), or a backend fresh() makes before each scrape, outside the timer
// (cold).
func benchScrape(b *testing.B, be *backend, s logical.Storage, fresh func() *backend) {
	req := &logical.Request{Operation: logical.ReadOperation, Path: "metrics", Storage: s}
	if be != nil {
		scrapeBody(b, be, req) // the warm-up that makes it warm
	}
	size := 0
	b.ReportAllocs()
	for b.Loop() {
		if fresh != nil {
			b.StopTimer()
			if be != nil {
				be.Cleanup(context.Background())
			}
			be = fresh()
			b.StartTimer()
		}
		size = scrapeBody(b, be, req)
	}
	b.ReportMetric(float64(size), "bytes/scrape")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/metricsRoles, "ns/role")
}

func scrapeBody(b *testing.B, be *backend, req *logical.Request) int {
	resp, err := be.HandleRequest(context.Background(), req)
	if err != nil || resp == nil || resp.IsError() {
		b.Fatalf("metrics read failed: %v %#v", err, resp)
	}
	body, _ := resp.Data[logical.HTTPRawBody].([]byte)
	if len(body) == 0 {
		b.Fatal("metrics read: empty body")
	}
	return len(body)
}
