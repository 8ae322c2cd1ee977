package oauth

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// dpopRole is role "app" (client_credentials) with dpop=true against a fresh provider.
func dpopRole(t *testing.T) (*testprovider.Provider, *backend, *faultyStorage) {
	t.Helper()
	p := newProviderWithClient(t)
	b, s := configuredWith(t, p, map[string]any{"client_id": testClientID, "client_secret": testClientSecret, "dpop": true})
	return p, b, s
}

func statusJKT(t *testing.T, b *backend, s logical.Storage) string {
	t.Helper()
	status := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app/status", nil))
	jkt, _ := status.Data["dpop_jkt"].(string)
	return jkt
}

func TestDPoPRoleGetsBoundTokenAndShowsOnlyItsPublicKey(t *testing.T) {
	p, b, s := dpopRole(t)
	creds := readCreds(t, b, s, "app", nil)
	if creds.Data["token_type"] != "DPoP" {
		t.Fatalf("token_type %v", creds.Data["token_type"])
	}
	issued, _ := p.Introspect(creds.Data["access_token"].(string))
	status := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app/status", nil))
	jwk := status.Data["dpop_jwk"].(map[string]any)
	if issued.JKT == "" || issued.JKT != status.Data["dpop_jkt"] || jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
		t.Fatalf("provider bound the token to %q; status shows %v", issued.JKT, status.Data)
	}
	if _, private := jwk["d"]; private {
		t.Fatal("status shows the private key")
	}
	role := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app", nil))
	if role.Data["dpop"] != true {
		t.Fatalf("role read dpop=%v", role.Data["dpop"])
	}
	stored, _ := b.role(t.Context(), s, "app")
	for _, resp := range []*logical.Response{role, status, creds} {
		assertNoSecrets(t, resp, stored.DPoPKey[30:90])
	}
	if p.DPoPRequests() != 1 {
		t.Fatalf("%d token requests carried a valid proof", p.DPoPRequests())
	}
}

func TestDPoPNonceIsObeyedOnceAndRemembered(t *testing.T) {
	p, b, s := dpopRole(t)
	p.RequireDPoPNonce(true)
	readCreds(t, b, s, "app", nil)
	if p.Requests() != 2 || p.DPoPRequests() != 1 {
		t.Fatalf("want one use_dpop_nonce answer and one retry, got %d requests (%d accepted)", p.Requests(), p.DPoPRequests())
	}
	// The nonce is remembered: the next grant needs one request.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
	if p.Requests() != 3 || p.DPoPRequests() != 2 {
		t.Fatalf("rotate with the remembered nonce took %d requests", p.Requests()-2)
	}
	// A renewed nonce costs one retry, not a failure.
	p.RenewDPoPNonce()
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
	if p.Requests() != 5 || p.DPoPRequests() != 3 {
		t.Fatalf("rotate after the nonce changed: %d requests in all, %d accepted", p.Requests(), p.DPoPRequests())
	}
}

func TestDPoPNonceRefusedTwiceIsAnError(t *testing.T) {
	p, b, s := dpopRole(t)
	p.RequireDPoPNonce(true)
	p.Intercept = func(http.ResponseWriter, *http.Request) bool {
		p.RenewDPoPNonce() // every proof arrives with a nonce that has just gone stale
		return false
	}
	resp, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil)
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a token was served without an accepted proof")
	}
	if got := p.Requests(); got != 2 {
		t.Fatalf("%d token requests: the nonce retry must happen once", got)
	}
}

func TestSignDPoPProofForRequest(t *testing.T) {
	p, b, s := dpopRole(t)
	const target = "https://api.example.com/v1/items?page=2#top"
	resp := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/app", map[string]any{"method": "POST", "url": target}))
	at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if resp.Data["authorization"] != "DPoP "+at {
		t.Fatalf("authorization %v", resp.Data["authorization"])
	}
	jkt, err := p.VerifyProof(resp.Data["dpop"].(string), "POST", "https://api.example.com/v1/items", at, "")
	if err != nil {
		t.Fatal(err)
	}
	if issued, _ := p.Introspect(at); issued.JKT != jkt {
		t.Fatalf("proof key %s, token bound to %s", jkt, issued.JKT)
	}
	// A resource server's nonce goes into the proof; each proof has its own jti.
	again := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/app", map[string]any{"method": "GET", "url": target, "nonce": "rs-nonce-1"}))
	if _, err := p.VerifyProof(again.Data["dpop"].(string), "GET", "https://api.example.com/v1/items", at, "rs-nonce-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifyProof(again.Data["dpop"].(string), "GET", "https://api.example.com/v1/items", at, "rs-nonce-1"); err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("the same proof verified twice: %v", err)
	}
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "sign/app", map[string]any{"url": target, "params": "a=1"}), "params")
}

func TestSignDPoPWithProviderThatIgnoresProofs(t *testing.T) {
	p, b, s := dpopRole(t)
	p.IgnoreDPoP = true
	resp := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/app", map[string]any{"url": "https://api.example.com/"}))
	at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if resp.Data["authorization"] != "Bearer "+at || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "ignored the proofs") {
		t.Fatalf("sign with a bearer token: %v, warnings %v", resp.Data["authorization"], resp.Warnings)
	}
}

func TestDPoPToggleChangesKeyAndToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	bearer := readCreds(t, b, s, "app", nil).Data
	if bearer["token_type"] != "Bearer" {
		t.Fatalf("token_type %v", bearer["token_type"])
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"dpop": true}))
	first := statusJKT(t, b, s)
	bound := readCreds(t, b, s, "app", nil).Data
	if bound["access_token"] == bearer["access_token"] || bound["token_type"] != "DPoP" {
		t.Fatalf("turning dpop on kept serving the bearer token: %v", bound)
	}
	// Writing dpop=true again keeps the key (and the token).
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"dpop": true}))
	if statusJKT(t, b, s) != first || readCreds(t, b, s, "app", nil).Data["access_token"] != bound["access_token"] {
		t.Fatal("rewriting dpop=true changed the key or the token")
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"dpop": false}))
	if statusJKT(t, b, s) != "" {
		t.Fatal("a role without dpop shows a key")
	}
	unbound := readCreds(t, b, s, "app", nil).Data
	if unbound["access_token"] == bound["access_token"] || unbound["token_type"] != "Bearer" {
		t.Fatalf("turning dpop off kept serving the DPoP token: %v", unbound)
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"dpop": true}))
	if second := statusJKT(t, b, s); second == "" || second == first {
		t.Fatalf("turning dpop on again reused key %s", first)
	}
	rebound := readCreds(t, b, s, "app", nil).Data
	if rebound["access_token"] == bound["access_token"] {
		t.Fatal("a token bound to the dropped key was served")
	}
	if issued, _ := p.Introspect(rebound["access_token"].(string)); issued.JKT != statusJKT(t, b, s) {
		t.Fatalf("token bound to %s", issued.JKT)
	}
	buf, _ := json.Marshal(rebound)
	if strings.Contains(string(buf), "PRIVATE KEY") {
		t.Fatal("creds shows the key")
	}
}
