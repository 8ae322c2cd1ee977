package oauth

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A lease=false role answers without a lease, with the times Vault Agent re-reads by.
func TestLeaselessCredsCarryRotationTimes(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 90 * time.Second
	b, s := configured(t, p)
	clockOf(b).Pin(time.Now())
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"lease": false}))

	resp := readCreds(t, b, s, "app", nil)
	if resp.Secret != nil {
		t.Fatal("a lease=false role answered with a lease")
	}
	// 90 s tokens, refresh_fraction 0.5: replaced once 45 s are left, every 45 s.
	if resp.Data["ttl"] != int64(45) || resp.Data["rotation_period"] != int64(45) {
		t.Fatalf("ttl %v, rotation_period %v; want 45 and 45", resp.Data["ttl"], resp.Data["rotation_period"])
	}
	clockOf(b).Advance(30 * time.Second)
	puts := s.puts.Load()
	again := readCreds(t, b, s, "app", nil)
	if again.Data["ttl"] != int64(15) || again.Data["access_token"] != resp.Data["access_token"] {
		t.Fatalf("30 s later the same token should come with ttl 15, got %v", again.Data["ttl"])
	}
	if s.puts.Load() != puts {
		t.Fatal("a lease-less cached read wrote storage")
	}
}

// lease is inherited from the config, overridden by the role, and changing it keeps the token.
func TestLeaseSettingInheritsAndKeepsToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"lease": false}))
	if got := readCreds(t, b, s, "app", nil); got.Secret != nil || got.Data["access_token"] != first.Data["access_token"] {
		t.Fatal("the config's lease=false should apply to the role and keep its token")
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"lease": true}))
	if readCreds(t, b, s, "app", nil).Secret == nil {
		t.Fatal("the role's lease=true should override the config")
	}
	if p.Requests() != 1 {
		t.Fatalf("changing lease caused %d grants", p.Requests()-1)
	}
}

// A token served below its threshold (the provider failing) brings Agent back soon, not at once.
func TestRotationTimesOfStaleToken(t *testing.T) {
	ttl, period := rotationTimes(20*time.Second, 90*time.Second, 45*time.Second)
	if ttl != int64(staleRereadAfter.Seconds()) || period != 45 {
		t.Fatalf("stale token: ttl %d, period %d", ttl, period)
	}
	if ttl, _ := rotationTimes(3*time.Second, 90*time.Second, 45*time.Second); ttl != 3 {
		t.Fatalf("a token with 3 s left should be re-read when it expires, ttl %d", ttl)
	}
}

// max_ttl bounds a lease-less answer's ttl as it bounds a lease.
func TestMaxTTLCapsLeaselessTTL(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"lease": false, "max_ttl": "60s"}))
	if ttl := readCreds(t, b, s, "app", nil).Data["ttl"]; ttl != int64(60) {
		t.Fatalf("ttl %v with max_ttl=60s", ttl)
	}
}
