//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/api"
)

const jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// signingKey is a private key as a role takes it (PEM) and as the provider registers it (JWKS).
type signingKey struct {
	pem  string
	jwks map[string]any
}

func newSigningKey(t testing.TB, kind, kid string) signingKey {
	t.Helper()
	var priv any
	var pub any
	var alg string
	switch kind {
	case "RSA":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		must(t, err)
		priv, pub, alg = k, &k.PublicKey, "RS256"
	case "EC":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		priv, pub, alg = k, &k.PublicKey, "ES256"
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	must(t, err)
	jwk, err := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"})
	must(t, err)
	var jwkMap map[string]any
	must(t, json.Unmarshal(jwk, &jwkMap))
	key := signingKey{
		pem:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		jwks: map[string]any{"keys": []any{jwkMap}},
	}
	rememberSecret(kindPrivateKey, key.pem)
	return key
}

// configuredMount mounts the plugin afresh and points it at the provider by discovery.
func configuredMount(t *testing.T) string {
	t.Helper()
	mount := newMount(t, "grants")
	mustWrite(t, env.client, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	return mount
}

// readActiveToken reads creds and checks the provider knows the token as active for clientID.
func readActiveToken(t *testing.T, c *api.Client, path, clientID string) (*api.Secret, map[string]any) {
	t.Helper()
	s := mustRead(t, c, path)
	token := str(s.Data["access_token"])
	in := introspect(t, token)
	if in["active"] != true || str(in["client_id"]) != clientID {
		t.Fatalf("token from %s is not active for %s: %v", path, clientID, in)
	}
	return s, in
}

func TestClientAuthMethodsAgainstProvider(t *testing.T) {
	rsaKey := newSigningKey(t, "RSA", "rsa-1")
	ecKey := newSigningKey(t, "EC", "ec-1")
	cases := []struct {
		name     string
		metadata map[string]any
		role     func(secret string) map[string]any
	}{
		{"client_secret_basic", map[string]any{"token_endpoint_auth_method": "client_secret_basic"},
			func(secret string) map[string]any {
				return map[string]any{"client_secret": secret, "auth_method": "client_secret_basic"}
			}},
		{"client_secret_post", map[string]any{"token_endpoint_auth_method": "client_secret_post"},
			func(secret string) map[string]any {
				return map[string]any{"client_secret": secret, "auth_method": "client_secret_post"}
			}},
		{"client_secret_jwt", map[string]any{"token_endpoint_auth_method": "client_secret_jwt"},
			func(secret string) map[string]any {
				return map[string]any{"client_secret": secret, "auth_method": "client_secret_jwt"}
			}},
		{"private_key_jwt_RS256", map[string]any{"token_endpoint_auth_method": "private_key_jwt", "jwks": rsaKey.jwks},
			func(string) map[string]any {
				return map[string]any{"client_key": rsaKey.pem, "client_key_kid": "rsa-1", "auth_method": "private_key_jwt"}
			}},
		{"private_key_jwt_ES256", map[string]any{"token_endpoint_auth_method": "private_key_jwt", "jwks": ecKey.jwks},
			func(string) map[string]any {
				return map[string]any{"client_key": ecKey.pem, "client_key_kid": "ec-1", "auth_method": "private_key_jwt"}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mount := configuredMount(t)
			id, secret := registerClient(t, tc.metadata)
			role := tc.role(secret)
			role["client_id"] = id
			role["scopes"] = "read"
			mustWrite(t, env.client, mount+"/roles/app", role)
			readActiveToken(t, env.client, mount+"/creds/app", id)
		})
	}
}

func TestPasswordGrantAgainstProvider(t *testing.T) {
	mount := configuredMount(t)
	id, secret := registerClient(t, map[string]any{
		"grant_types": []string{"password", "refresh_token"}, "scope": "openid read",
	})
	rememberSecret(kindPassword, "alice-password")
	mustWrite(t, env.client, mount+"/roles/user", map[string]any{
		"grant_type": "password", "client_id": id, "client_secret": secret,
		"username": "alice", "password": "alice-password", "scopes": "openid,read",
		"token_params": "takeExclusiveSignOnControl=true",
	})
	env.ResetStats(t)
	s, in := readActiveToken(t, env.client, mount+"/creds/user", id)
	if str(in["sub"]) != "alice" {
		t.Fatalf("token subject = %v, want alice", in["sub"])
	}
	if str(s.Data["id_token"]) == "" {
		t.Fatal("the provider's id_token should pass through for scope openid")
	}
	params, _ := env.ProviderStats(t).LastParams["password"].(map[string]any)
	if str(params["takeExclusiveSignOnControl"]) != "true" {
		t.Fatalf("token_params did not reach the provider: %v", params)
	}

	// A forced renewal goes through the refresh token the password grant returned.
	env.ResetStats(t)
	s2 := mustReadWith(t, mount+"/creds/user", url.Values{"min_seconds": {"86400"}})
	if str(s2.Data["access_token"]) == str(s.Data["access_token"]) {
		t.Fatal("min_seconds above the lifetime should obtain a new token")
	}
	if got := env.ProviderStats(t).ByGrant; got["refresh_token"] != 1 || got["password"] != 0 {
		t.Fatalf("renewal should use the refresh token, provider saw %v", got)
	}
}

func TestRefreshTokenGrantRotationAgainstProvider(t *testing.T) {
	mount := configuredMount(t)
	id, secret := registerClient(t, map[string]any{"grant_types": []string{"password", "refresh_token"}})
	imported := obtainRefreshToken(t, id, secret)
	mustWrite(t, env.client, mount+"/roles/mail", map[string]any{
		"grant_type": "refresh_token", "client_id": id, "client_secret": secret, "refresh_token": imported,
	})

	first, _ := readActiveToken(t, env.client, mount+"/creds/mail", id)
	if in := introspect(t, imported); in["active"] == true {
		t.Fatal("the imported refresh token should be dead after the provider rotated it")
	}
	// Across a second rotation the role keeps working: it must be using the rotated token.
	second := mustReadWith(t, mount+"/creds/mail", url.Values{"min_seconds": {"86400"}})
	if str(second.Data["access_token"]) == str(first.Data["access_token"]) {
		t.Fatal("min_seconds above the lifetime should obtain a new token")
	}
	if in := introspect(t, str(second.Data["access_token"])); in["active"] != true {
		t.Fatalf("token after the second rotation is not active: %v", in)
	}
	role := mustRead(t, env.client, mount+"/roles/mail").Data
	if role["refresh_token_set"] != true || role["refresh_token"] != nil {
		t.Fatalf("role read must not show the refresh token: %v", role)
	}
}

func TestJWTBearerGrantAgainstProvider(t *testing.T) {
	rsaKey := newSigningKey(t, "RSA", "assert-1")
	t.Run("RS256_public_client", func(t *testing.T) {
		mount := configuredMount(t)
		id, _ := registerClient(t, map[string]any{
			"grant_types": []string{jwtBearerGrant}, "token_endpoint_auth_method": "none", "jwks": rsaKey.jwks,
		})
		mustWrite(t, env.client, mount+"/roles/etl", map[string]any{
			"grant_type": "jwt_bearer", "client_id": id, "auth_method": "none",
			"assertion_key": rsaKey.pem, "assertion_kid": "assert-1", "assertion_subject": "etl-service",
			"assertion_claims": `{"tenant":"acme"}`, "scopes": "read",
		})
		_, in := readActiveToken(t, env.client, mount+"/creds/etl", id)
		if str(in["sub"]) != "etl-service" {
			t.Fatalf("subject = %v, want the assertion's sub", in["sub"])
		}
	})
	t.Run("HS256_shared_secret", func(t *testing.T) {
		mount := configuredMount(t)
		id, secret := registerClient(t, map[string]any{"grant_types": []string{jwtBearerGrant}})
		rememberSecret(kindHMACSecret, secret)
		mustWrite(t, env.client, mount+"/roles/etl", map[string]any{
			"grant_type": "jwt_bearer", "client_id": id, "client_secret": secret, "assertion_key": secret,
		})
		_, in := readActiveToken(t, env.client, mount+"/creds/etl", id)
		if str(in["sub"]) != id {
			t.Fatalf("subject = %v, want the client ID", in["sub"])
		}
	})
}

// TestSecretTokenParamsAgainstProvider: a secret_token_params value (write-only) goes to the token
// endpoint with the grant and is never shown: a role read lists only its name, and errors about
// the field quote no value. The value is registered with the leak scan, which looks for it in
// Vault's server and audit logs and in every answer and error text the suite recorded.
func TestSecretTokenParamsAgainstProvider(t *testing.T) {
	mount := configuredMount(t)
	id, secret := registerClient(t, nil)
	apiKey := "stp-" + randSuffix() + randSuffix() + randSuffix()
	rememberSecret(kindSecretTokenParam, apiKey)
	role := mount + "/roles/app"

	// As the CLI sends key=value pairs; the same name in token_params is refused.
	if _, code, msg := vaultWrite(t, env.client, role, map[string]any{
		"client_id": id, "client_secret": secret, "scopes": "read",
		"token_params": []string{"api_key=public"}, "secret_token_params": []string{"api_key=" + apiKey},
	}); code != http.StatusBadRequest || !strings.Contains(msg, "secret_token_params") || strings.Contains(msg, apiKey) {
		t.Errorf("a parameter both in token_params and secret_token_params: HTTP %d %q, want 400 naming the field, not the value",
			code, strings.ReplaceAll(msg, apiKey, "<secret>"))
	}
	mustWrite(t, env.client, role, map[string]any{
		"client_id": id, "client_secret": secret, "scopes": "read",
		"token_params": []string{"tenant=acme"}, "secret_token_params": []string{"api_key=" + apiKey},
	})

	env.ResetStats(t)
	s, _ := readActiveToken(t, env.client, mount+"/creds/app", id)
	st := env.ProviderStats(t)
	if n := st.ByClient[id]; n != 1 {
		t.Fatalf("the provider saw %d token requests from the client, want 1", n)
	}
	params, _ := st.LastParams["client_credentials"].(map[string]any)
	if got := str(params["api_key"]); got != apiKey {
		t.Fatalf("the secret token parameter did not reach the provider: api_key %s (public parameters seen: tenant=%q)", fingerprint(got), params["tenant"])
	}
	if str(params["tenant"]) != "acme" {
		t.Errorf("token_params did not reach the provider next to the secret one: %v", params["tenant"])
	}
	if raw, _ := json.Marshal(s); strings.Contains(string(raw), apiKey) {
		t.Error("the creds answer shows the secret token parameter")
	}

	r := mustRead(t, env.client, role)
	if raw, _ := json.Marshal(r); strings.Contains(string(raw), apiKey) {
		t.Error("the role read shows the secret token parameter's value")
	}
	if _, shown := r.Data["secret_token_params"]; shown {
		t.Errorf("the role read has a secret_token_params field: %v", r.Data["secret_token_params"] != nil)
	}
	names, _ := r.Data["secret_token_param_names"].([]any)
	if len(names) != 1 || str(names[0]) != "api_key" {
		t.Errorf("secret_token_param_names = %v, want [api_key]", r.Data["secret_token_param_names"])
	}
	if tp, _ := r.Data["token_params"].(map[string]any); str(tp["tenant"]) != "acme" || tp["api_key"] != nil {
		t.Errorf("token_params = %v, want tenant=acme only", r.Data["token_params"])
	}
	status := mustRead(t, env.client, role+"/status")
	if raw, _ := json.Marshal(status); strings.Contains(string(raw), apiKey) {
		t.Error("the role's status shows the secret token parameter")
	}
}

// obtainRefreshToken gets a refresh token for alice at the provider
// (e2eharness.Suite.ObtainRefreshToken) and remembers it, and her password, for the leak scan.
func obtainRefreshToken(t *testing.T, id, secret string) string {
	t.Helper()
	rt := env.ObtainRefreshToken(t, id, secret, "read")
	rememberSecret(kindPassword, "alice-password")
	rememberSecret(kindRefreshToken, rt)
	return rt
}

func mustReadWith(t *testing.T, path string, params url.Values) *api.Secret {
	t.Helper()
	s, code, msg := vaultRead(t, env.client, path, params)
	if code != http.StatusOK || s == nil {
		t.Fatalf("read %s: HTTP %d: %s", path, code, msg)
	}
	return s
}
