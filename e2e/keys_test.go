//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// vaultJWKS reads the mount's JWKS as the provider does: plain HTTP, no Vault token.
func vaultJWKS(t *testing.T, mount string) (kids []string, header http.Header) {
	t.Helper()
	resp, err := httpClient.Get(env.vaultAddr + "/v1/" + mount + "/jwks")
	must(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	recordText("answer to jwks of "+mount, string(raw))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks: %s: %s", resp.Status, raw)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	must(t, json.Unmarshal(raw, &set))
	for _, k := range set.Keys {
		if _, private := k["d"]; private {
			t.Fatal("the JWKS publishes a private key")
		}
		kids = append(kids, str(k["kid"]))
	}
	return kids, resp.Header
}

// jwksFetches is how many times the provider fetched url.
func jwksFetches(t *testing.T, u string) int64 {
	t.Helper()
	resp, err := httpClient.Get(env.ProviderURL + "/test/jwks-fetches")
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks fetches: %s", resp.Status)
	}
	var out struct {
		Fetches map[string]int64 `json:"fetches"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Fetches[u]
}

func keyKID(s map[string]any, version string) string {
	v, _ := s[version].(map[string]any)
	return str(v["kid"])
}

// A client registered with jwks_uri at the mount's jwks authenticates with private_key_jwt
// signed by a key born in Vault, and keeps doing so across rotations.
func TestKeysPrivateKeyJWTThroughVaultJWKS(t *testing.T) {
	mount := configuredMount(t)
	key := mustWrite(t, env.client, mount+"/keys/client", map[string]any{"alg": "ES256"}).Data
	jwksURI := env.vaultAddr + "/v1/" + mount + "/jwks"
	kids, header := vaultJWKS(t, mount)
	if !slices.Equal(kids, []string{keyKID(key, "current"), keyKID(key, "next")}) {
		t.Fatalf("jwks has %v, want current and next of %v", kids, key)
	}
	if ct, cc := header.Get("Content-Type"), header.Get("Cache-Control"); ct != "application/jwk-set+json" || !strings.Contains(cc, "max-age=") {
		t.Fatalf("jwks headers: Content-Type %q, Cache-Control %q", ct, cc)
	}

	id, _ := registerClient(t, map[string]any{"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwksURI})
	mustWrite(t, env.client, mount+"/roles/app", map[string]any{
		"client_id": id, "auth_method": "private_key_jwt", "client_key_name": "client", "scopes": "read",
	})
	first, _ := readActiveToken(t, env.client, mount+"/creds/app", id)
	if n := jwksFetches(t, jwksURI); n != 1 {
		t.Fatalf("the provider fetched the JWKS %d times, want 1", n)
	}

	// The next key was published before it signs: the provider's cached JWKS knows it.
	rotated := mustWrite(t, env.client, mount+"/keys/client/rotate", nil).Data
	if keyKID(rotated, "current") != keyKID(key, "next") {
		t.Fatalf("rotate: %v", rotated)
	}
	if again := mustRead(t, env.client, mount+"/creds/app"); str(again.Data["access_token"]) != str(first.Data["access_token"]) {
		t.Fatal("a key rotation replaced the cached token")
	}
	mustWrite(t, env.client, mount+"/rotate/app", nil)
	readActiveToken(t, env.client, mount+"/creds/app", id)
	if n := jwksFetches(t, jwksURI); n != 1 {
		t.Fatalf("after a publish-ahead rotation the provider fetched the JWKS %d times, want 1", n)
	}

	// Once the provider's cache has run out (as max-age makes it), a key it never saw signs: it
	// fetches the JWKS again and finds the kid.
	resp, err := httpClient.Post(env.ProviderURL+"/test/clients/"+url.PathEscape(id)+"/jwks-stale", "application/json", nil)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("jwks-stale: %s", resp.Status)
	}
	second := mustWrite(t, env.client, mount+"/keys/client/rotate", nil).Data
	mustWrite(t, env.client, mount+"/rotate/app", nil)
	readActiveToken(t, env.client, mount+"/creds/app", id)
	if n := jwksFetches(t, jwksURI); n != 2 {
		t.Fatalf("the provider fetched the JWKS %d times after its cache ran out, want 2", n)
	}
	kids, _ = vaultJWKS(t, mount)
	for _, kid := range []string{keyKID(key, "current"), keyKID(second, "current"), keyKID(second, "next")} {
		if !slices.Contains(kids, kid) {
			t.Fatalf("jwks %v lacks %s (retiring keys stay published)", kids, kid)
		}
	}

	// The key cannot go while the role uses it.
	if code, msg := vaultDelete(t, env.client, mount+"/keys/client"); code != http.StatusBadRequest || !strings.Contains(msg, "role app") {
		t.Fatalf("delete of a used key: %d %s", code, msg)
	}
}

// A role whose provider no longer takes client_secret falls back to client_secret_next,
// promotes it, and says so in its status.
func TestKeysClientSecretFallback(t *testing.T) {
	mount := configuredMount(t)
	id, secret := registerClient(t, nil)
	old := "retired-client-secret-" + id
	rememberSecret(kindClientSecret, old)
	mustWrite(t, env.client, mount+"/roles/app", map[string]any{
		"client_id": id, "auth_method": "client_secret_basic", "client_secret": old, "client_secret_next": secret, "scopes": "read",
	})
	readActiveToken(t, env.client, mount+"/creds/app", id)
	status := mustRead(t, env.client, mount+"/roles/app/status").Data
	if str(status["client_secret_promoted_at"]) == "" {
		t.Fatalf("status does not show the promotion: %v", status)
	}
	role := mustRead(t, env.client, mount+"/roles/app").Data
	if role["client_secret_next_set"] != false || role["client_secret_set"] != true {
		t.Fatalf("role after promotion: %v", role)
	}
	mustWrite(t, env.client, mount+"/rotate/app", nil)
	readActiveToken(t, env.client, mount+"/creds/app", id)
}
