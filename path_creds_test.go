package oauth

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

func TestCredsReturnsProviderTokenAsLease(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 30 * time.Minute
	b, s := configured(t, p)

	resp := readCreds(t, b, s, "app", nil)
	at := resp.Data["access_token"].(string)
	issued, active := p.Introspect(at)
	if !active || issued.ClientID != testClientID || issued.Scope != "read write" {
		t.Fatalf("provider does not know the token as an active one for the client: %+v active=%v", issued, active)
	}
	if resp.Secret == nil || resp.Secret.Renewable {
		t.Fatalf("want a non-renewable lease, got %#v", resp.Secret)
	}
	if ttl := resp.Secret.TTL; ttl < 29*time.Minute || ttl > 30*time.Minute {
		t.Fatalf("lease TTL %s does not match the token's 30m lifetime", ttl)
	}
	if got := resp.Data["expires_in"].(int64); got < 1790 || got > 1800 {
		t.Fatalf("expires_in = %d, want about 1800", got)
	}
	if resp.Data["token_type"] != "Bearer" || resp.Data["scope"] != "read write" {
		t.Fatalf("unexpected data %#v", resp.Data)
	}
	if _, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string)); err != nil {
		t.Fatalf("expires_at is not RFC 3339: %v", err)
	}
}

func TestCredsCacheHitUsesNoNetworkAndNoStorageWrite(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]

	requests, puts, gets := p.Requests(), s.puts.Load(), s.gets.Load()
	for range 5 {
		if got := readCreds(t, b, s, "app", nil).Data["access_token"]; got != first {
			t.Fatalf("cached read returned a different token")
		}
	}
	if p.Requests() != requests {
		t.Fatalf("cache hits sent %d requests to the provider", p.Requests()-requests)
	}
	if s.puts.Load() != puts || s.gets.Load() != gets {
		t.Fatalf("cache hits touched storage: %d puts, %d gets", s.puts.Load()-puts, s.gets.Load()-gets)
	}
}

func TestConcurrentColdReadsShareOneGrant(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	p.Hold = make(chan struct{})

	const readers = 100
	var wg sync.WaitGroup
	tokens := make([]string, readers)
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil)
			if err != nil || resp.IsError() {
				errs <- err
				return
			}
			tokens[i] = resp.Data["access_token"].(string)
		}()
	}
	// The provider holds the first request until every reader has missed the cache (each
	// looks up the role's token in storage once before it joins the grant).
	waitFor(t, func() bool { return p.Requests() >= 1 && s.tokenGets() >= readers })
	close(p.Hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a reader failed: %v", err)
	}
	if p.Requests() != 1 {
		t.Fatalf("%d concurrent cold reads made %d grants, want 1", readers, p.Requests())
	}
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatal("readers got different tokens")
		}
	}
}

func TestMinSecondsForcesFreshToken(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]

	if got := readCreds(t, b, s, "app", map[string]any{"min_seconds": 60}).Data["access_token"]; got != first {
		t.Fatal("min_seconds below the time left should be served from cache")
	}
	second := readCreds(t, b, s, "app", map[string]any{"min_seconds": 900})
	if second.Data["access_token"] == first {
		t.Fatal("min_seconds above the time left should obtain a new token")
	}
	if len(second.Warnings) == 0 {
		t.Fatal("a token shorter than min_seconds should come with a warning")
	}
}

func TestTokenNearExpiryIsReplacedOnRead(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]

	clockOf(b).Shift(6 * time.Minute) // less than half left
	if got := readCreds(t, b, s, "app", nil).Data["access_token"]; got == first {
		t.Fatal("a token past its refresh threshold should be replaced")
	}
}

func TestProviderDownServesCachedTokenWithWarning(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]
	p.Close()

	clockOf(b).Shift(8 * time.Minute)
	resp := readCreds(t, b, s, "app", nil)
	if resp.Data["access_token"] != first {
		t.Fatal("the still-valid cached token should be served while the provider is down")
	}
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "cached token") {
		t.Fatalf("want a warning about the cached token, got %v", resp.Warnings)
	}
	if ttl := resp.Secret.TTL; ttl > 2*time.Minute+time.Second {
		t.Fatalf("lease %s outlives the cached token", ttl)
	}

	clockOf(b).Shift(11 * time.Minute)
	if _, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil); err == nil {
		t.Fatal("with the provider down and the token expired, the read must fail")
	}
}

func TestProviderRejectionIsReportedWithoutSecrets(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"token_url": p.TokenURL(), "client_id": testClientID, "client_secret": "wrong-secret-value",
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", nil))

	resp := request(t, b, s, logical.ReadOperation, "creds/app", nil)
	mustFailNaming(t, resp, "invalid_client")
	msg := resp.Error().Error()
	if !strings.Contains(msg, "401") || !strings.Contains(msg, "client authentication failed") {
		t.Fatalf("error should name the HTTP status and error_description: %q", msg)
	}
	if strings.Contains(msg, "wrong-secret-value") {
		t.Fatalf("error leaks the client secret: %q", msg)
	}
}

func TestCredsErrors(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/missing", nil), `role "missing" does not exist`)
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/app", map[string]any{"min_seconds": -1}), "min_seconds")
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/bad name", nil), "name")

	unconfigured, s2 := newTestBackend(t)
	mustSucceed(t, request(t, unconfigured, s2, logical.UpdateOperation, "roles/app", nil))
	mustFailNaming(t, request(t, unconfigured, s2, logical.ReadOperation, "creds/app", nil), "oauth/config")
}

func TestLeaseRevocationKeepsTokenAtProvider(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	resp := readCreds(t, b, s, "app", nil)
	at := resp.Data["access_token"].(string)

	_, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Storage: s, Secret: resp.Secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, active := p.Introspect(at); !active {
		t.Fatal("revoking one reader's lease revoked the shared token")
	}
	if got := readCreds(t, b, s, "app", nil).Data["access_token"]; got != at {
		t.Fatal("the shared token should still be served after a lease revocation")
	}
}

func TestMaxTTLCapsLeaseAndDefaultTTLAppliesWithoutExpiresIn(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 0 // no expires_in in responses
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"default_ttl": "20m"}))
	if ttl := readCreds(t, b, s, "app", nil).Secret.TTL; ttl < 19*time.Minute || ttl > 20*time.Minute {
		t.Fatalf("without expires_in the lease should follow default_ttl=20m, got %s", ttl)
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"max_ttl": "5m"}))
	if ttl := readCreds(t, b, s, "app", nil).Secret.TTL; ttl != 5*time.Minute {
		t.Fatalf("max_ttl should cap the lease at 5m, got %s", ttl)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReadHonoursRetryAfterWhileCachedTokenIsValid(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]

	p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	clockOf(b).Shift(6 * time.Minute)
	if resp := readCreds(t, b, s, "app", nil); resp.Data["access_token"] != first || len(resp.Warnings) == 0 {
		t.Fatal("a 429 should leave the cached token served with a warning")
	}
	requests := p.Requests()
	resp := readCreds(t, b, s, "app", nil)
	if p.Requests() != requests {
		t.Fatal("a read within Retry-After must not call the provider again")
	}
	if resp.Data["access_token"] != first || !strings.Contains(resp.Warnings[0], "retry after") {
		t.Fatalf("want the cached token and a Retry-After warning, got %v", resp.Warnings)
	}
}

// A performance standby answers cache hits itself and hands misses to the active node.
func TestStandbyServesHitsAndForwardsMisses(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	active, s := configured(t, p)
	cached := readCreds(t, active, s, "app", nil).Data["access_token"]

	standby := newBackend(&testClock{}, oauthclient.NewClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = s
	conf.System.(*logical.StaticSystemView).ReplicationStateVal = consts.ReplicationPerformanceStandby
	if err := standby.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	if got := readCreds(t, standby, s, "app", nil).Data["access_token"]; got != cached {
		t.Fatal("the standby should serve the cached token")
	}
	requests := p.Requests()
	if _, err := requestErr(standby, s, logical.ReadOperation, "creds/app", map[string]any{"min_seconds": 900}); err != logical.ErrReadOnly {
		t.Fatalf("a miss on a standby must return ErrReadOnly so Vault forwards it, got %v", err)
	}
	if p.Requests() != requests {
		t.Fatal("the standby called the provider")
	}
}
