//go:build e2e

package e2e

import (
	"net/http"
	"strings"
	"testing"
)

const (
	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	accessTokenType    = "urn:ietf:params:oauth:token-type:access_token"
	ordersAudience     = "https://orders.example"
)

// mustBeNarrowed checks that the provider knows token as active, issued to clientID for subject
// sub with the orders audience and scope "read" only.
func mustBeNarrowed(t *testing.T, token, clientID, sub string) {
	t.Helper()
	in := introspect(t, token)
	if in["active"] != true || str(in["client_id"]) != clientID || str(in["sub"]) != sub {
		t.Fatalf("exchanged token is not active for client %s and subject %s: %v", clientID, sub, in)
	}
	if str(in["aud"]) != ordersAudience || str(in["scope"]) != "read" {
		t.Fatalf("exchanged token has aud %v scope %v, want %s and read", in["aud"], in["scope"], ordersAudience)
	}
}

// One broad client_credentials role; a narrow role exchanges its token for the orders audience.
func TestExchangeChainedRoles(t *testing.T) {
	mount := newMount(t, "exchange")
	mustWrite(t, env.client, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	id, secret := registerClient(t, map[string]any{"grant_types": []string{"client_credentials", tokenExchangeGrant}, "scope": "read write"})
	client := map[string]any{"client_id": id, "client_secret": secret}
	mustWrite(t, env.client, mount+"/roles/broad", merge(client, map[string]any{"scopes": "read,write"}))
	mustWrite(t, env.client, mount+"/roles/orders", merge(client, map[string]any{
		"grant_type": "token_exchange", "subject_role": "broad", "audience": ordersAudience, "scopes": "read",
	}))

	s := mustRead(t, env.client, mount+"/creds/orders")
	narrow := str(s.Data["access_token"])
	mustBeNarrowed(t, narrow, id, id)
	if str(s.Data["issued_token_type"]) != accessTokenType || s.LeaseID == "" {
		t.Fatalf("creds of a chained role: want a lease and issued_token_type, got %v (lease %q)", s.Data, s.LeaseID)
	}
	broad := str(mustRead(t, env.client, mount+"/creds/broad").Data["access_token"])
	if in := introspect(t, broad); str(in["scope"]) != "read write" {
		t.Fatalf("the subject role's token has scope %v", in["scope"])
	}
	if again := str(mustRead(t, env.client, mount+"/creds/orders").Data["access_token"]); again != narrow {
		t.Fatalf("a second read of the chained role did not serve the cached token")
	}

	// Rotating the subject role (which revokes its previous token) changes the chained token; the
	// provider takes only active subject tokens, so the new one was exchanged from the new one.
	mustWrite(t, env.client, mount+"/rotate/broad", nil)
	if in := introspect(t, broad); in["active"] == true {
		t.Fatalf("the rotated subject token is still active")
	}
	narrow2 := str(mustRead(t, env.client, mount+"/creds/orders").Data["access_token"])
	if narrow2 == narrow {
		t.Fatalf("rotating the subject role did not change the chained token")
	}
	mustBeNarrowed(t, narrow2, id, id)

	// A loop and a delete of a role in use are refused, naming what is at stake.
	if _, code, msg := vaultWrite(t, env.client, mount+"/roles/broad", map[string]any{"grant_type": "token_exchange", "subject_role": "orders"}); code != http.StatusBadRequest || !strings.Contains(msg, "broad -> orders -> broad") {
		t.Fatalf("a loop was not refused: HTTP %d: %s", code, msg)
	}
	if code, msg := vaultDelete(t, env.client, mount+"/roles/broad"); code != http.StatusBadRequest || !strings.Contains(msg, "orders") {
		t.Fatalf("deleting a subject role in use was not refused: HTTP %d: %s", code, msg)
	}
}

// A service exchanges the token a user sent it for one to call the orders API as that user.
func TestExchangeOnBehalfOf(t *testing.T) {
	mount := newMount(t, "exchange")
	mustWrite(t, env.client, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	frontID, frontSecret := registerClient(t, map[string]any{"grant_types": []string{"password"}, "scope": "read write"})
	svcID, svcSecret := registerClient(t, map[string]any{"grant_types": []string{tokenExchangeGrant}, "scope": "read"})
	mustWrite(t, env.client, mount+"/roles/obo", map[string]any{
		"client_id": svcID, "client_secret": svcSecret, "grant_type": "token_exchange", "audience": ordersAudience, "scopes": "read",
	})
	user := passwordToken(t, frontID, frontSecret)

	s := mustWrite(t, env.client, mount+"/exchange/obo", map[string]any{"subject_token": user})
	exchanged := str(s.Data["access_token"])
	mustBeNarrowed(t, exchanged, svcID, "alice")
	if s.LeaseID != "" || str(s.Data["issued_token_type"]) != accessTokenType {
		t.Fatalf("exchange answer: want no lease and issued_token_type, got %v (lease %q)", s.Data, s.LeaseID)
	}

	calls := env.ProviderStats(t).ByClient[svcID]
	again := mustWrite(t, env.client, mount+"/exchange/obo", map[string]any{"subject_token": user, "subject_token_type": "access_token"})
	if str(again.Data["access_token"]) != exchanged {
		t.Fatalf("a second exchange of the same subject token did not answer the cached token")
	}
	if now := env.ProviderStats(t).ByClient[svcID]; now != calls {
		t.Fatalf("the cached exchange called the provider (%d token requests, was %d)", now, calls)
	}

	// A subject token the provider does not know: the provider's error, without the token.
	bogus := "not-a-token-" + randSuffix() + randSuffix()
	rememberSecret(kindSubjectToken, bogus)
	_, code, msg := vaultWrite(t, env.client, mount+"/exchange/obo", map[string]any{"subject_token": bogus})
	if code != http.StatusBadRequest || !strings.Contains(msg, "invalid_grant") || strings.Contains(msg, bogus) {
		t.Fatalf("a bad subject token: HTTP %d: %s", code, msg)
	}
}

// passwordToken signs alice in at the provider as a front end would; the access token is the
// subject token a service receives.
func passwordToken(t *testing.T, id, secret string) string {
	t.Helper()
	at := env.PasswordGrant(t, id, secret, "read write").AccessToken
	rememberSecret(kindSubjectToken, at)
	rememberSecret(kindPassword, "alice-password")
	return at
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range []map[string]any{a, b} {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
