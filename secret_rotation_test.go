package oauth

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

const (
	oldSecret = "old-secret-0123456789abcdef0123456789"
	newSecret = "new-secret-0123456789abcdef0123456789"
)

// secretRoleBackend has role "app" with client_secret=oldSecret and client_secret_next=newSecret
// at a provider whose client takes providerSecret.
func secretRoleBackend(t *testing.T, providerSecret string) (*testprovider.Provider, *backend, *faultyStorage) {
	t.Helper()
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: providerSecret, AuthMethod: "client_secret_basic"})
	b, s := newTestBackend(t)
	clockOf(b).Pin(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"client_id": testClientID, "auth_method": "client_secret_basic", "client_secret": oldSecret, "client_secret_next": newSecret,
	}))
	return p, b, s
}

func storedRole(t *testing.T, s logical.Storage) *roleEntry {
	t.Helper()
	role, err := readEntry[roleEntry](context.Background(), s, rolePrefix+"app")
	if err != nil || role == nil {
		t.Fatalf("role: %v %v", role, err)
	}
	return role
}

func basicSecret(r *http.Request) string {
	_, pass, _ := r.BasicAuth()
	secret, _ := url.QueryUnescape(pass)
	return secret
}

func TestSecretNextTriedOnInvalidClientAndPromoted(t *testing.T) {
	p, b, s := secretRoleBackend(t, newSecret)
	readCreds(t, b, s, "app", nil)
	if p.Requests() != 2 {
		t.Fatalf("%d token requests, want the refused one and the one with client_secret_next", p.Requests())
	}
	if role := storedRole(t, s); role.ClientSecret != newSecret || role.ClientSecretNext != "" {
		t.Fatal("client_secret_next was not promoted")
	}
	status := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app/status", nil)).Data
	if status["client_secret_promoted_at"] != "2026-01-01T00:00:00Z" {
		t.Fatalf("status: %v", status)
	}
	if read := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app", nil)).Data; read["client_secret_next_set"] != false || read["client_secret_promoted_at"] != "2026-01-01T00:00:00Z" {
		t.Fatalf("role read: %v", read)
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
	if p.Requests() != 3 {
		t.Fatalf("after the promotion a grant took %d requests", p.Requests()-2)
	}
}

// The config's secrets rotate the same way for the roles that use them.
func TestSecretNextOfTheConfig(t *testing.T) {
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: newSecret, AuthMethod: "client_secret_post"})
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"token_url": p.TokenURL(), "client_id": testClientID, "auth_method": "client_secret_post", "client_secret": oldSecret, "client_secret_next": newSecret,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", nil))
	readCreds(t, b, s, "app", nil)
	cfg, _ := readEntry[configEntry](context.Background(), s, configPath)
	if cfg.ClientSecret != newSecret || cfg.ClientSecretNext != "" || cfg.ClientSecretPromotedAt.IsZero() {
		t.Fatal("the config's client_secret_next was not promoted")
	}
	if status := request(t, b, s, logical.ReadOperation, "roles/app/status", nil).Data; status["client_secret_promoted_at"] == "" {
		t.Fatalf("status: %v", status)
	}
}

func TestSecretNextRefusedTooKeepsBoth(t *testing.T) {
	p, b, s := secretRoleBackend(t, "a-third-secret-0123456789abcdef0123")
	resp := request(t, b, s, logical.ReadOperation, "creds/app", nil)
	mustFailNaming(t, resp, "client_secret_next was tried too")
	if strings.Contains(resp.Error().Error(), oldSecret) || strings.Contains(resp.Error().Error(), newSecret) {
		t.Fatal("the error shows a secret")
	}
	if role := storedRole(t, s); role.ClientSecret != oldSecret || role.ClientSecretNext != newSecret || p.Requests() != 2 {
		t.Fatalf("a refused client_secret_next changed the role or was tried %d times", p.Requests())
	}
}

// An edit of the secrets made while the grant with client_secret_next is at the provider wins
// over the promotion that grant would make.
func TestSecretEditDuringFallbackWins(t *testing.T) {
	p, b, s := secretRoleBackend(t, newSecret)
	const edited = "edited-secret-0123456789abcdef0123"
	p.Intercept = func(_ http.ResponseWriter, r *http.Request) bool {
		if basicSecret(r) == newSecret {
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"client_secret": edited, "client_secret_next": ""}))
		}
		return false
	}
	readCreds(t, b, s, "app", nil)
	if role := storedRole(t, s); role.ClientSecret != edited || role.ClientSecretNext != "" || !role.ClientSecretPromotedAt.IsZero() {
		t.Fatal("the promotion overwrote the edit")
	}
}

// An explicit promotion while a grant with the old secret is held at the provider: the grant,
// refused, falls back to the same secret, succeeds and stores its token, and promotes nothing.
func TestSecretPromotionWhileGrantInFlight(t *testing.T) {
	p, b, s := secretRoleBackend(t, oldSecret)
	p.Hold = make(chan struct{})
	done := make(chan *logical.Response)
	go func() {
		resp, _ := requestErr(b, s, logical.ReadOperation, "creds/app", nil)
		done <- resp
	}()
	deadline := time.Now().Add(10 * time.Second)
	for p.Requests() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the grant never reached the provider")
		}
		time.Sleep(time.Millisecond)
	}
	promoted := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app/promote-secret", nil)).Data
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: newSecret, AuthMethod: "client_secret_basic"})
	clockOf(b).Advance(time.Minute)
	close(p.Hold)
	resp := mustSucceed(t, <-done)
	if resp.Data["access_token"] == "" || p.Requests() != 2 {
		t.Fatalf("creds: %v after %d requests", resp.Data, p.Requests())
	}
	role := storedRole(t, s)
	if role.ClientSecret != newSecret || rfc3339(role.ClientSecretPromotedAt) != promoted["client_secret_promoted_at"] {
		t.Fatalf("the in-flight grant promoted again (at %s)", role.ClientSecretPromotedAt)
	}
	if again := readCreds(t, b, s, "app", nil).Data["access_token"]; again != resp.Data["access_token"] || p.Requests() != 2 {
		t.Fatal("the token obtained during the promotion was not stored")
	}
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app/promote-secret", nil), "client_secret_next")
}

func TestSecretNextInputIsChecked(t *testing.T) {
	p := testprovider.New(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL(), "client_id": "c"}))
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"client_secret_next": newSecret}), "client_secret_next")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"client_secret": oldSecret, "client_secret_next": []any{"a", "b"}}), "client_secret_next")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", nil))
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app/promote-secret", nil), "config/promote-secret")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "config/promote-secret", nil), "client_secret_next")
}

// A config write prepared while a promotion is stored keeps the promotion, unless it sets the
// secrets itself: then the edit wins.
func TestSecretConfigWriteRacingPromotion(t *testing.T) {
	for _, tc := range []struct {
		name       string
		write      map[string]any
		wantSecret string
	}{
		{"an edit of other fields keeps the promotion", map[string]any{"timeout": "20s"}, newSecret},
		{"an edit of the secret wins", map[string]any{"client_secret": "edited-secret-0123456789abcdef0123"}, "edited-secret-0123456789abcdef0123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testprovider.New(t)
			b, s := newTestBackend(t)
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/k", nil))
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
				"token_url": p.TokenURL(), "client_id": testClientID, "client_secret": oldSecret, "client_secret_next": newSecret, "client_key_name": "k",
			}))
			// The write reads the key (not cached) after it has read the config and before it
			// stores: a grant's promotion lands there.
			b.cache.keys.drop("k")
			promoted := false
			s.onGet = func(key string) {
				if key == keyPrefix+"k" && !promoted {
					promoted = true
					if at, err := b.promoteConfigSecret(context.Background(), s, oldSecret, newSecret); err != nil || at.IsZero() {
						t.Errorf("promotion: %v %v", at, err)
					}
				}
			}
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", tc.write))
			s.onGet = nil
			cfg, _ := readEntry[configEntry](context.Background(), s, configPath)
			if !promoted || cfg.ClientSecret != tc.wantSecret {
				t.Fatalf("promoted=%v; the config's secret is not the expected one", promoted)
			}
			if tc.wantSecret == newSecret && (cfg.ClientSecretNext != "" || cfg.ClientSecretPromotedAt.IsZero()) {
				t.Fatal("the write brought back client_secret_next")
			}
		})
	}
}
