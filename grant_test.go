package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

func rsaKeyPEM(t testing.TB) (string, *rsa.PrivateKey) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})), k
}

func ecKeyPEM(t testing.TB) (string, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), k
}

// configuredWith writes config (token_url only) and one role with the given fields.
func configuredWith(t testing.TB, p *testprovider.Provider, role map[string]any) (*backend, *faultyStorage) {
	t.Helper()
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", role))
	return b, s
}

func TestClientAuthMethods(t *testing.T) {
	rsaPEM, rsaKey := rsaKeyPEM(t)
	ecPEM, ecKey := ecKeyPEM(t)
	cases := []struct {
		name   string
		client testprovider.Client
		role   map[string]any
	}{
		{"client_secret_basic", testprovider.Client{Secret: testClientSecret, AuthMethod: "client_secret_basic"},
			map[string]any{"client_secret": testClientSecret, "auth_method": "client_secret_basic"}},
		{"client_secret_post", testprovider.Client{Secret: testClientSecret, AuthMethod: "client_secret_post"},
			map[string]any{"client_secret": testClientSecret, "auth_method": "client_secret_post"}},
		{"client_secret_jwt", testprovider.Client{Secret: testClientSecret, AuthMethod: "client_secret_jwt"},
			map[string]any{"client_secret": testClientSecret, "auth_method": "client_secret_jwt"}},
		{"private_key_jwt RS256", testprovider.Client{AuthMethod: "private_key_jwt", PublicKey: &rsaKey.PublicKey},
			map[string]any{"client_key": rsaPEM, "client_key_kid": "k1", "auth_method": "private_key_jwt"}},
		{"private_key_jwt ES256", testprovider.Client{AuthMethod: "private_key_jwt", PublicKey: &ecKey.PublicKey},
			map[string]any{"client_key": ecPEM, "auth_method": "private_key_jwt"}},
		{"none", testprovider.Client{AuthMethod: "none"},
			map[string]any{"auth_method": "none"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, b, s, clientID := backendForClient(t, "client-"+tc.name, tc.client, tc.role)
			at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
			if issued, active := p.Introspect(at); !active || issued.ClientID != clientID {
				t.Fatalf("token not active for %s: %+v", clientID, issued)
			}
		})
	}
}

func TestAuthMethodChosenFromDiscovery(t *testing.T) {
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: testClientSecret, AuthMethod: "client_secret_post"})
	p.SetMetadata(map[string]any{"token_endpoint_auth_methods_supported": []string{"private_key_jwt", "client_secret_post"}})
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"issuer": p.URL, "client_id": testClientID, "client_secret": testClientSecret,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", nil))
	readCreds(t, b, s, "app", nil) // fails unless client_secret_post was chosen
	cfg := request(t, b, s, logical.ReadOperation, "config", nil).Data
	if cfg["token_url"] != p.TokenURL() || cfg["revocation_url"] != p.URL+"/revoke" {
		t.Fatalf("discovered endpoints not shown: %v", cfg)
	}
}

func TestPasswordGrantUsesRefreshTokenThenFallsBackToPassword(t *testing.T) {
	p := newProviderWithClient(t)
	p.AddUser("alice", "alice-password-value")
	p.TokenTTL = 10 * time.Minute
	b, s := configuredWith(t, p, map[string]any{
		"grant_type": "password", "client_id": testClientID, "client_secret": testClientSecret,
		"username": "alice", "password": "alice-password-value", "scopes": "openid,profile",
		"token_params": "takeExclusiveSignOnControl=true",
	})
	first := readCreds(t, b, s, "app", nil)
	issued, _ := p.Introspect(first.Data["access_token"].(string))
	if issued.Subject != "alice" || issued.Params["grant_type"][0] != "password" || issued.Params["takeExclusiveSignOnControl"][0] != "true" {
		t.Fatalf("unexpected first grant: %+v", issued)
	}
	if first.Data["id_token"] == nil {
		t.Fatal("id_token should pass through when the provider sends one")
	}

	clockOf(b).Shift(6 * time.Minute)
	second := readCreds(t, b, s, "app", nil)
	issued, _ = p.Introspect(second.Data["access_token"].(string))
	if issued.Params["grant_type"][0] != "refresh_token" {
		t.Fatalf("renewal should use the refresh token, used %v", issued.Params["grant_type"])
	}

	p.RevokeRefreshTokens()
	clockOf(b).Shift(12 * time.Minute)
	third := readCreds(t, b, s, "app", nil)
	issued, _ = p.Introspect(third.Data["access_token"].(string))
	if issued.Params["grant_type"][0] != "password" {
		t.Fatalf("a rejected refresh token should fall back to the password, used %v", issued.Params["grant_type"])
	}
}

func TestRefreshTokenGrantRotatesAndPersistsBeforeAnswering(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s, imported := refreshTokenRole(t, p, "api", nil)
	readCreds(t, b, s, "app", nil)
	if p.RefreshTokenValid(imported) {
		t.Fatal("the provider should have rotated the imported refresh token")
	}
	stored := storedToken(t, s, "app")
	if stored.RefreshToken == "" || stored.RefreshToken == imported || !p.RefreshTokenValid(stored.RefreshToken) {
		t.Fatal("the rotated refresh token was not persisted")
	}

	clockOf(b).Shift(6 * time.Minute)
	second := readCreds(t, b, s, "app", nil)
	if issued, active := p.Introspect(second.Data["access_token"].(string)); !active || issued.Subject != "bob" {
		t.Fatalf("second rotation failed: %+v", issued)
	}
	if p.RefreshTokenValid(stored.RefreshToken) {
		t.Fatal("the second read should have used (and so rotated) the newest refresh token")
	}
	role := request(t, b, s, logical.ReadOperation, "roles/app", nil).Data
	if role["refresh_token_set"] != true || role["refresh_token"] != nil {
		t.Fatalf("role read must show only that a refresh token is set: %v", role)
	}
}

func TestRefreshTokenInvalidGrantKeepsTokenAndTellsOperator(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s, _ := refreshTokenRole(t, p, "", nil)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]
	p.RevokeRefreshTokens()

	clockOf(b).Shift(6 * time.Minute)
	resp := readCreds(t, b, s, "app", nil)
	if resp.Data["access_token"] != first || len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "import a new one") {
		t.Fatalf("want the last valid token and a warning to import a new refresh token, got %v", resp.Warnings)
	}

	clockOf(b).Shift(11 * time.Minute)
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/app", nil), "invalid_grant")

	// Importing a new refresh token brings the role back.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"refresh_token": p.IssueRefreshToken(testClientID, "bob", "")}))
	readCreds(t, b, s, "app", nil)
}

func TestRotatedRefreshTokenSurvivesStorageFailure(t *testing.T) {
	p := newProviderWithClient(t)
	b, s, imported := refreshTokenRole(t, p, "", nil)
	s.setFailPut(func(key string) bool { return strings.HasPrefix(key, tokenPrefix) })
	if _, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil); err == nil || !strings.Contains(err.Error(), "could not be stored") {
		t.Fatalf("a failed store must be reported, got %v", err)
	}
	if p.RefreshTokenValid(imported) {
		t.Fatal("precondition: the provider rotated the refresh token")
	}

	// Storage recovers: the next read stores the token the provider already issued, without a
	// new grant, so the rotated refresh token is not lost.
	requests := p.Requests()
	s.setFailPut(nil)
	readCreds(t, b, s, "app", nil)
	if p.Requests() != requests {
		t.Fatal("the held token should have been stored instead of asking the provider again")
	}
	if stored := storedToken(t, s, "app"); !p.RefreshTokenValid(stored.RefreshToken) {
		t.Fatal("the rotated refresh token did not reach storage")
	}
}

func TestJWTBearerGrant(t *testing.T) {
	rsaPEM, rsaKey := rsaKeyPEM(t)
	ecPEM, ecKey := ecKeyPEM(t)
	cases := []struct {
		name   string
		client testprovider.Client
		role   map[string]any
	}{
		{"HS256", testprovider.Client{Secret: testClientSecret, AuthMethod: "client_secret_basic"},
			map[string]any{"client_secret": testClientSecret, "assertion_key": testClientSecret}},
		{"RS256", testprovider.Client{Secret: testClientSecret, AuthMethod: "client_secret_basic", PublicKey: &rsaKey.PublicKey},
			map[string]any{"client_secret": testClientSecret, "assertion_key": rsaPEM, "assertion_kid": "rsa1"}},
		{"ES256 public client", testprovider.Client{AuthMethod: "none", PublicKey: &ecKey.PublicKey},
			map[string]any{"auth_method": "none", "assertion_key": ecPEM, "assertion_subject": "service-user", "assertion_claims": `{"tenant":"t1"}`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.role["grant_type"] = "jwt_bearer"
			p, b, s, clientID := backendForClient(t, "jwt-"+tc.name, tc.client, tc.role)
			at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
			issued, active := p.Introspect(at)
			if !active {
				t.Fatal("token not active")
			}
			wantSub := clientID
			if sub, ok := tc.role["assertion_subject"].(string); ok {
				wantSub = sub
			}
			if issued.Subject != wantSub {
				t.Fatalf("subject = %q, want %q", issued.Subject, wantSub)
			}
		})
	}
}

func storedToken(t testing.TB, s *faultyStorage, name string) *tokenEntry {
	t.Helper()
	tok := new(tokenEntry)
	if found, err := getJSON(t.Context(), s.Storage, tokenPrefix+name, tok); err != nil || !found {
		t.Fatalf("no stored token for %s: %v", name, err)
	}
	return tok
}
