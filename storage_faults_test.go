package oauth

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// Storage faults: storage that refuses writes or reads must never leave a half-written role or
// token, and never forget a rotated refresh token without reporting it as the role's last error.

func (s *faultyStorage) setFailGet(f func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failGet = f
}

func isTokenKey(key string) bool { return strings.HasPrefix(key, tokenPrefix) }

// rotatingRole is a refresh_token role with a token cached (so its refresh token has rotated
// once), aged past its refresh threshold but still valid.
func rotatingRole(t *testing.T) (*testprovider.Provider, *backend, *faultyStorage) {
	t.Helper()
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s, _ := refreshTokenRole(t, p, "read", map[string]any{"scopes": "read"})
	readCreds(t, b, s, "app", nil)
	clockOf(b).Shift(6 * time.Minute)
	return p, b, s
}

func roleStatus(t *testing.T, b *backend, s logical.Storage) map[string]any {
	t.Helper()
	return mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app/status", nil)).Data
}

func TestFailedTokenWriteKeepsRotatedRefreshTokenAndReportsIt(t *testing.T) {
	p, b, s := rotatingRole(t)
	before := s.snapshot(t)
	cached := storedToken(t, s, "app")

	s.setFailPut(isTokenKey)
	_, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil)
	if err == nil || !strings.Contains(err.Error(), "could not be stored") {
		t.Fatalf("a refused write of the new token must be reported, got %v", err)
	}
	if p.RefreshTokenValid(cached.RefreshToken) {
		t.Fatal("precondition: the provider rotated the refresh token")
	}
	if after := s.snapshot(t); !maps.Equal(before, after) {
		t.Fatal("a refused write changed storage")
	}
	status := roleStatus(t, b, s)
	if msg, _ := status["last_error"].(string); !strings.Contains(msg, "could not be stored") {
		t.Fatalf("the role's last_error must say its newest token is not stored, got %q", msg)
	}

	// Still failing: the held token (valid) is served with a warning, nothing else is asked.
	requests := p.Requests()
	resp := readCreds(t, b, s, "app", nil)
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "could not be stored") {
		t.Fatalf("want a warning that the token is not stored, got %q", resp.Warnings)
	}
	if p.Requests() != requests {
		t.Fatal("while the held token is unstored the provider must not be asked again")
	}

	s.setFailPut(nil)
	readCreds(t, b, s, "app", nil)
	stored := storedToken(t, s, "app")
	if !p.RefreshTokenValid(stored.RefreshToken) || p.Requests() != requests {
		t.Fatal("once storage recovers, the held token and its rotated refresh token must be stored")
	}
	if status := roleStatus(t, b, s); status["last_error"] != "" || status["consecutive_failures"] != 0 {
		t.Fatalf("after the token is stored the error is over: %v", status)
	}
}

func TestRoleEditWhileTokenUnstoredKeepsRotatedRefreshToken(t *testing.T) {
	p, b, s := rotatingRole(t)
	s.setFailPut(isTokenKey)
	if _, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil); err == nil {
		t.Fatal("precondition: the token write failed")
	}
	s.setFailPut(nil)

	// A change of scope retires the access token but keeps the refresh token: the one the
	// provider rotated to, which exists only in memory until the next read stores and uses it.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read,write"}))
	clockOf(b).Shift(0)
	resp := readCreds(t, b, s, "app", nil)
	if issued, active := p.Introspect(resp.Data["access_token"].(string)); !active || fmt.Sprint(issued.Params["scope"]) != "[read write]" {
		t.Fatalf("the edited role should get a token for its new scopes with the rotated refresh token: %+v", issued)
	}
	if rt := storedToken(t, s, "app").RefreshToken; !p.RefreshTokenValid(rt) {
		t.Fatal("the stored refresh token is not accepted by the provider; the rotated one was lost")
	}
}

func TestFailedReadsChangeNothing(t *testing.T) {
	for _, key := range []string{rolePrefix + "app", tokenPrefix + "app"} {
		t.Run(key, func(t *testing.T) {
			p, b, s := rotatingRole(t)
			b.cache.roles.drop("app")
			b.cache.tokens.drop("app")
			before, requests := s.snapshot(t), p.Requests()
			s.setFailGet(func(k string) bool { return k == key })

			if _, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil); err == nil || !strings.Contains(err.Error(), key) {
				t.Fatalf("a failed read of %s must be an internal error naming it, got %v", key, err)
			}
			if p.Requests() != requests {
				t.Fatal("the provider was asked although the role's state could not be read")
			}
			if after := s.snapshot(t); !maps.Equal(before, after) {
				t.Fatal("storage changed")
			}
			s.setFailGet(nil)
			readCreds(t, b, s, "app", nil)
		})
	}
}

func TestFailedFailureRecordStillServesCachedToken(t *testing.T) {
	p, b, s := rotatingRole(t)
	cached := storedToken(t, s, "app")
	p.RevokeRefreshTokens()
	s.setFailPut(isTokenKey)

	resp := readCreds(t, b, s, "app", nil)
	if resp.Data["access_token"] != cached.AccessToken || len(resp.Warnings) == 0 {
		t.Fatalf("want the cached token with a warning, got %v", resp.Warnings)
	}
	if stored := storedToken(t, s, "app"); tokenPart(stored) != tokenPart(cached) {
		t.Fatal("the stored token changed")
	}
}

func TestFailedConfigAndRoleWritesAreAllOrNothing(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil)
	before := s.snapshot(t)

	s.setFailPut(func(k string) bool { return k == configPath || strings.HasPrefix(k, rolePrefix) })
	if _, err := requestErr(b, s, logical.UpdateOperation, "config", map[string]any{"timeout": 7}); err == nil {
		t.Fatal("a refused config write must fail")
	}
	if _, err := requestErr(b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "admin"}); err == nil {
		t.Fatal("a refused role write must fail")
	}
	if _, err := requestErr(b, s, logical.UpdateOperation, "roles/other", nil); err == nil {
		t.Fatal("a refused role create must fail")
	}
	s.setFailPut(nil)
	// The role edit may have dropped the old grant's token first (role and token agree either
	// way); config and roles are as they were.
	after := s.snapshot(t)
	for _, key := range []string{configPath, rolePrefix + "app"} {
		if before[key] != after[key] {
			t.Fatalf("a refused write changed %s", key)
		}
	}
	if _, ok := after[rolePrefix+"other"]; ok {
		t.Fatal("a refused create left a role behind")
	}
	// Nor did the refused writes reach the in-memory copies.
	if got := request(t, b, s, logical.ReadOperation, "config", nil).Data["timeout"]; got != int64(defaultTimeout.Seconds()) {
		t.Fatalf("config timeout = %v after a refused write", got)
	}
	if got := request(t, b, s, logical.ReadOperation, "roles/app", nil).Data["scopes"]; strings.Join(got.([]string), ",") != "read,write" {
		t.Fatalf("role scopes = %v after a refused write", got)
	}
	if resp := request(t, b, s, logical.ReadOperation, "roles/other", nil); resp != nil {
		t.Fatal("a refused create left a cached role behind")
	}
	at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if issued, _ := p.Introspect(at); issued.Scope != "read write" {
		t.Fatalf("the token served after refused writes has scope %q", issued.Scope)
	}
}

func TestRefusedTokenDropOnRoleEditNeverServesOldGrant(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil)

	// The role write succeeds but dropping the token of the old grant fails.
	s.setFailPut(isTokenKey)
	s.Storage = &deleteRefusingStorage{Storage: s.Storage}
	_, err := requestErr(b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "admin"})
	s.Storage = s.Storage.(*deleteRefusingStorage).Storage
	s.setFailPut(nil)

	at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	issued, _ := p.Introspect(at)
	role := request(t, b, s, logical.ReadOperation, "roles/app", nil).Data
	scopes := strings.Join(role["scopes"].([]string), " ")
	if issued.Scope != scopes {
		t.Fatalf("after a role write that returned %v, the role asks for %q but the token served has %q", err, scopes, issued.Scope)
	}
}

// deleteRefusingStorage fails every Delete.
type deleteRefusingStorage struct{ logical.Storage }

func (deleteRefusingStorage) Delete(_ context.Context, _ string) error { return errInjected }

func TestRotateWithRefusedWriteKeepsServingOldToken(t *testing.T) {
	p, b, s := rotatingRole(t)
	cached := storedToken(t, s, "app")
	s.setFailPut(isTokenKey)
	if _, err := requestErr(b, s, logical.UpdateOperation, "rotate/app", nil); err == nil || !strings.Contains(err.Error(), "could not be stored") {
		t.Fatalf("a rotate whose token cannot be stored must fail, got %v", err)
	}
	if stored := storedToken(t, s, "app"); tokenPart(stored) != tokenPart(cached) {
		t.Fatal("the stored token changed")
	}
	s.setFailPut(nil)
	readCreds(t, b, s, "app", nil)
	if !p.RefreshTokenValid(storedToken(t, s, "app").RefreshToken) {
		t.Fatal("the refresh token rotated by the failed rotate was lost")
	}
}

// A role edit while a refresh-token grant is under way must not leave the role holding the
// refresh token the provider rotated away during that grant.
func TestRoleEditDuringGrantKeepsRotatedRefreshToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s, _ := refreshTokenRole(t, p, "", nil)
	readCreds(t, b, s, "app", nil)
	rotated := storedToken(t, s, "app").RefreshToken

	p.Hold = make(chan struct{})
	done := make(chan *logical.Response)
	go func() {
		resp, _ := requestErr(b, s, logical.ReadOperation, "creds/app", map[string]any{"min_seconds": 86400})
		done <- resp
	}()
	waitFor(t, func() bool { return p.Requests() >= 2 })
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read"}))
	close(p.Hold)
	mustFailNaming(t, <-done, "changed")

	if p.RefreshTokenValid(rotated) {
		t.Fatal("precondition: the grant under way rotated the refresh token")
	}
	kept := storedToken(t, s, "app")
	if kept.AccessToken != "" || !p.RefreshTokenValid(kept.RefreshToken) {
		t.Fatal("the role must hold the newly rotated refresh token and no access token of the old grant")
	}
	at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if _, active := p.Introspect(at); !active {
		t.Fatal("the edited role should get a token with the kept refresh token")
	}
}
