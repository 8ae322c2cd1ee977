package oauth

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// rotatingSecretConfig points the backend at p (which takes only newSecret) with client_secret
// oldSecret and client_secret_next newSecret on the config.
func rotatingSecretConfig(t *testing.T, b *backend, s logical.Storage, p *testprovider.Provider, extra map[string]any) {
	t.Helper()
	data := map[string]any{"issuer": p.URL, "client_id": testClientID, "client_secret": oldSecret, "client_secret_next": newSecret}
	for k, v := range extra {
		data[k] = v
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", data))
}

func configPromoted(t *testing.T, s logical.Storage) bool {
	t.Helper()
	cfg, err := readEntry[configEntry](t.Context(), s, configPath)
	if err != nil || cfg == nil {
		t.Fatalf("config: %v %v", cfg, err)
	}
	return cfg.ClientSecret == newSecret && cfg.ClientSecretNext == ""
}

// The code exchange falls back on client_secret_next as every other token request does: a
// person's authorization is not lost to a secret rotated at the provider.
func TestSecretNextOnCodeExchange(t *testing.T) {
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: newSecret, AuthMethod: "client_secret_basic", RedirectURIs: []string{testRedirectURI}})
	b, s := newTestBackend(t)
	rotatingSecretConfig(t, b, s, p, map[string]any{"redirect_uri": testRedirectURI})
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"grant_type": "authorization_code", "scopes": "openid,offline_access"}))
	e := &codeEnv{b: b, s: s, p: p}
	if status := e.connect(t, "app"); status != http.StatusOK {
		t.Fatalf("callback answered %d", status)
	}
	if e.status(t, "app")["authorization"] != "authorized" || !configPromoted(t, s) {
		t.Fatal("the code exchange did not fall back on client_secret_next and promote it")
	}
}

// The device authorization request and the device polls fall back on client_secret_next too.
func TestSecretNextOnDeviceFlow(t *testing.T) {
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: newSecret, AuthMethod: "client_secret_basic"})
	b, s := newTestBackend(t)
	e := &deviceEnv{b: b, s: s, p: p, clock: clockOf(b)}
	e.clock.Pin(time.Now())
	rotatingSecretConfig(t, b, s, p, nil)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"grant_type": "device_code", "scopes": "openid,offline_access"}))
	initialize(t, b, s)
	code := e.start(t)
	if !configPromoted(t, s) {
		t.Fatal("the device authorization request did not promote client_secret_next")
	}
	// The provider takes the old secret no more, and the next one is set again for the polls.
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: "newer-secret-0123456789abcdef012345", AuthMethod: "client_secret_basic"})
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"client_secret_next": "newer-secret-0123456789abcdef012345"}))
	p.ApproveDevice(code, "dave")
	e.advance(t, 5*time.Second, 2, "authorized", "")
}

// With mutual TLS the device authorization request goes to the provider's mTLS alias of the
// device authorization endpoint (RFC 8705 §5), as the token requests do to theirs.
func TestMTLSDeviceAuthorizationAlias(t *testing.T) {
	pki := newClientPKI(t, "payments")
	p := testprovider.NewTLS(t, pki.Pool)
	p.SetMetadata(map[string]any{"mtls_endpoint_aliases": map[string]any{
		"token_endpoint": p.URL + "/mtls/token", "device_authorization_endpoint": p.URL + "/mtls/device_authorization",
	}})
	p.AddClient(&testprovider.Client{ID: "payments", AuthMethod: "tls_client_auth", TLSSubjectDN: "CN=payments"})
	var mu sync.Mutex
	var paths []string
	p.Intercept = func(_ http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		paths = append(paths, r.URL.Path)
		return false
	}
	b, s := tlsConfigured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"grant_type": "device_code", "client_id": "payments", "auth_method": "tls_client_auth", "client_cert": pki.CertPEM, "client_key": pki.KeyPEM,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "device/app", nil))
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 1 || paths[0] != "/mtls/device_authorization" {
		t.Fatalf("device authorization requests went to %v", paths)
	}
}

// exchange/ answers its token to the reader, who holds no DPoP key and cannot have sign/ prove
// it: a reader-supplied token_exchange role refuses dpop, and one with a subject_role takes it.
func TestDPoPOnlyOnExchangeRolesWithATokenOfTheirOwn(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/obo", map[string]any{"grant_type": "token_exchange", "dpop": true}), "dpop")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/obo", map[string]any{"grant_type": "token_exchange"}))
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/obo", map[string]any{"dpop": true}), "dpop")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/subject", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/chained", map[string]any{"grant_type": "token_exchange", "subject_role": "subject", "dpop": true}))
}

// A DPoP role that a person authorizes gets DPoP-bound tokens from the code exchange and from the
// device polls, proofs carrying the provider's nonce.
func TestDPoPOnDelegatedGrants(t *testing.T) {
	bound := func(t *testing.T, b *backend, s logical.Storage, p *testprovider.Provider) {
		t.Helper()
		creds := readCreds(t, b, s, "app", nil)
		issued, active := p.Introspect(creds.Data["access_token"].(string))
		if creds.Data["token_type"] != "DPoP" || !active || issued.JKT == "" || issued.JKT != statusJKT(t, b, s) {
			t.Fatalf("token_type %v, bound to %q, role key %q", creds.Data["token_type"], issued.JKT, statusJKT(t, b, s))
		}
	}
	t.Run("authorization_code", func(t *testing.T) {
		e := newCodeEnv(t)
		e.p.RequireDPoPNonce(true)
		mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"dpop": true}))
		if status := e.connect(t, "app"); status != http.StatusOK {
			t.Fatalf("callback answered %d", status)
		}
		bound(t, e.b, e.s, e.p)
	})
	t.Run("device_code", func(t *testing.T) {
		e := newDeviceEnv(t)
		e.p.RequireDPoPNonce(true)
		mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"dpop": true}))
		code := e.start(t)
		e.p.ApproveDevice(code, "dave")
		// The first poll learns the nonce (use_dpop_nonce) and is sent again with it.
		e.advance(t, 5*time.Second, 2, "authorized", "")
		bound(t, e.b, e.s, e.p)
	})
}

// A DPoP role that authenticates with mutual TLS proves its requests to the mTLS alias of the
// token endpoint, where they go (RFC 9449 §4.3: htu is the request's URL).
func TestDPoPAtTheMTLSAlias(t *testing.T) {
	pki := newClientPKI(t, "payments")
	p := testprovider.NewTLS(t, pki.Pool)
	p.SetMetadata(map[string]any{"mtls_endpoint_aliases": map[string]any{"token_endpoint": p.URL + "/mtls/token"}})
	p.AddClient(&testprovider.Client{ID: "payments", AuthMethod: "tls_client_auth", TLSSubjectDN: "CN=payments"})
	b, s := tlsConfigured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"client_id": "payments", "auth_method": "tls_client_auth", "client_cert": pki.CertPEM, "client_key": pki.KeyPEM, "dpop": true,
	}))
	creds := readCreds(t, b, s, "app", nil)
	issued, _ := p.Introspect(creds.Data["access_token"].(string))
	if p.TokenRequestsAt("/mtls/token") != 1 || creds.Data["token_type"] != "DPoP" || issued.JKT != statusJKT(t, b, s) {
		t.Fatalf("%d requests at the alias; token_type %v bound to %q", p.TokenRequestsAt("/mtls/token"), creds.Data["token_type"], issued.JKT)
	}
}

// Roles that never hold a token of their own (oauth1, exchange/ roles) have no token gauges: with
// role labels off they would pin the mount's least time left at 0, where no alert looks.
func TestMetricsLeaveOutTokenlessRoles(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	clockOf(b).Pin(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/signer", map[string]any{
		"grant_type": "oauth1", "consumer_key": "k", "consumer_secret": "consumer-secret", "token": "t", "token_secret": "token-secret",
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/obo", map[string]any{"grant_type": "token_exchange"}))
	readCreds(t, b, s, "app", nil)
	text := scrape(t, b, s)
	for _, series := range []string{`vault_oauth_token_seconds_left{role="signer"}`, `vault_oauth_token_seconds_left{role="obo"}`, `vault_oauth_retry_after_seconds{role="signer"}`} {
		if strings.Contains(text, series) {
			t.Errorf("metrics show %s", series)
		}
	}
	mustContain(t, text, `vault_oauth_token_seconds_left{role="app"} 3600`, `vault_oauth_roles 3`)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"metrics_role_labels": false}))
	mustContain(t, scrape(t, b, s), `vault_oauth_token_seconds_left{role=""} 3600`)
}

// A rotate whose grant promotes client_secret_next revokes the replaced token with the secret the
// provider now takes.
func TestRotateRevokesWithThePromotedSecret(t *testing.T) {
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: oldSecret, AuthMethod: "client_secret_basic"})
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"issuer": p.URL, "client_id": testClientID, "client_secret": oldSecret}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", nil))
	old := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	// The provider moves to the new secret; the config learns it as client_secret_next.
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: newSecret, AuthMethod: "client_secret_basic"})
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"client_secret_next": newSecret}))
	resp := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", map[string]any{"revoke_previous": true}))
	if _, active := p.Introspect(old); active || resp.Data["previous_token_revoked"] != true || len(resp.Warnings) > 0 {
		t.Fatalf("previous token active=%v; rotate answered %v, warnings %v", active, resp.Data["previous_token_revoked"], resp.Warnings)
	}
	if !configPromoted(t, s) {
		t.Fatal("client_secret_next was not promoted")
	}
}
