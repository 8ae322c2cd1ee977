package oauth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// Regression tests for issue 11: edits and grants in flight never lose, resurrect or misdirect a
// token. Each grant in flight is held open by the provider until the test releases it.

// forcing is min_seconds beyond any token's lifetime: the read must ask the provider.
var forcing = map[string]any{"min_seconds": 86400}

// holdThenFail makes the provider hold every token request until the returned release is
// called, then answer 503.
func holdThenFail(p *testprovider.Provider) (release func()) {
	gate := make(chan struct{})
	p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
		<-gate
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	return func() { close(gate) }
}

// readInFlight starts a creds read and waits until its grant has reached the provider.
func readInFlight(t *testing.T, p *testprovider.Provider, b *backend, s logical.Storage, data map[string]any) <-chan *logical.Response {
	t.Helper()
	before := p.Requests()
	done := make(chan *logical.Response, 1)
	go func() {
		resp, err := requestErr(b, s, logical.ReadOperation, "creds/app", data)
		if err != nil {
			resp = logical.ErrorResponse(err.Error())
		}
		done <- resp
	}()
	waitFor(t, func() bool { return p.Requests() > before })
	return done
}

func accessToken(resp *logical.Response) string {
	s, _ := resp.Data["access_token"].(string)
	return s
}

// Item 1: Terraform re-sends every field; an unchanged refresh_token must not replace the chain.
func TestReapplyWithSameRefreshTokenKeepsRotatedChain(t *testing.T) {
	p := newProviderWithClient(t)
	b, s, imported := refreshTokenRole(t, p, "read", map[string]any{"scopes": "read"})
	readCreds(t, b, s, "app", nil)
	rotated := storedToken(t, s, "app").RefreshToken

	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"grant_type": "refresh_token", "client_id": testClientID, "client_secret": testClientSecret,
		"refresh_token": imported, "scopes": "read", "audience": "https://api.example.com",
	}))
	resp := readCreds(t, b, s, "app", nil)
	issued, active := p.Introspect(accessToken(resp))
	if !active || fmt.Sprint(issued.Params["audience"]) != "[https://api.example.com]" {
		t.Fatalf("the re-applied role should get a token for its new definition: %+v", issued)
	}
	if p.RefreshTokenValid(rotated) || !p.RefreshTokenValid(storedToken(t, s, "app").RefreshToken) {
		t.Fatal("the grant should have used, and replaced, the rotated refresh token")
	}
}

// Item 2: a role deleted while its grant fails is not brought back, nor its token inherited.
func TestRoleDeletedDuringFailedGrantStaysDeleted(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	old := accessToken(readCreds(t, b, s, "app", nil))

	release := holdThenFail(p)
	done := readInFlight(t, p, b, s, forcing)
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/app", nil))
	release()
	if resp := <-done; accessToken(resp) != "" {
		t.Fatal("a read of a role deleted meanwhile was served its old token")
	}
	for key := range s.snapshot(t) {
		if strings.HasSuffix(key, "/app") {
			t.Fatalf("the deleted role's %s came back", key)
		}
	}
	p.Intercept = nil
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read,write"}))
	if got := accessToken(readCreds(t, b, s, "app", nil)); got == old {
		t.Fatal("a role created again was served the deleted role's token")
	}
}

// Item 2: scopes narrowed while a grant fails: the broad token is never served again.
func TestScopesNarrowedDuringFailedGrantRetireBroadToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	broad := accessToken(readCreds(t, b, s, "app", nil))

	release := holdThenFail(p)
	done := readInFlight(t, p, b, s, forcing)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read"}))
	release()
	if resp := <-done; accessToken(resp) == broad {
		t.Fatal("the read in flight was served the token of the scopes just removed")
	}
	p.Intercept = nil
	resp := readCreds(t, b, s, "app", nil)
	if issued, _ := p.Introspect(accessToken(resp)); accessToken(resp) == broad || issued.Scope != "read" {
		t.Fatalf("after narrowing the scopes the role got %q", issued.Scope)
	}
}

// Item 2: a refresh token imported while a grant with the old chain fails is the one used next.
func TestImportDuringFailedGrantIsUsed(t *testing.T) {
	p := newProviderWithClient(t)
	b, s, _ := refreshTokenRole(t, p, "", nil)
	readCreds(t, b, s, "app", nil)

	release := holdThenFail(p)
	done := readInFlight(t, p, b, s, forcing)
	fresh := p.IssueRefreshToken(testClientID, "carol", "")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"refresh_token": fresh}))
	release()
	<-done
	p.Intercept = nil
	issued, _ := p.Introspect(accessToken(readCreds(t, b, s, "app", nil)))
	if issued.Subject != "carol" || p.RefreshTokenValid(fresh) {
		t.Fatalf("the newly imported refresh token should have been used, got a token for %q", issued.Subject)
	}
}

// Item 3: rotate must not revoke what a refresh-token role lives on, unless asked to.
func TestRotateKeepsRefreshTokenRoleAlive(t *testing.T) {
	p := newProviderWithClient(t)
	p.RevokeGrantWithAccessToken = true
	imported := p.IssueRefreshToken(testClientID, "bob", "")
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"issuer": p.URL}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"grant_type": "refresh_token", "client_id": testClientID, "client_secret": testClientSecret, "refresh_token": imported,
	}))
	old := accessToken(readCreds(t, b, s, "app", nil))

	resp := rotate(t, b, s, "app")
	if resp.Data["previous_token_revoked"] != false || len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "refresh token") {
		t.Fatalf("rotate of a refresh-token role should keep the previous token and say why: %v %v", resp.Data["previous_token_revoked"], resp.Warnings)
	}
	if _, active := p.Introspect(old); !active {
		t.Fatal("rotate revoked the previous token of a refresh-token role")
	}
	if !p.RefreshTokenValid(storedToken(t, s, "app").RefreshToken) {
		t.Fatal("after rotate the role's refresh token is dead")
	}

	current := accessToken(readCreds(t, b, s, "app", nil))
	resp = mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", map[string]any{"revoke_previous": true}))
	if _, active := p.Introspect(current); active || resp.Data["previous_token_revoked"] != true {
		t.Fatal("revoke_previous=true should revoke the previous token")
	}
}

// Item 4: an edit during the role's first grant keeps the refresh token that grant rotated to.
func TestEditDuringFirstGrantKeepsRotatedRefreshToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s, imported := refreshTokenRole(t, p, "", nil)
	p.Hold = make(chan struct{})
	done := readInFlight(t, p, b, s, nil)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read"}))
	close(p.Hold)
	mustFailNaming(t, <-done, "changed")

	kept := storedToken(t, s, "app")
	if p.RefreshTokenValid(imported) || kept.AccessToken != "" || !p.RefreshTokenValid(kept.RefreshToken) {
		t.Fatal("the role must hold the rotated refresh token and no access token of its old definition")
	}
	readCreds(t, b, s, "app", nil)
}

// Item 5: a token is served only for the client and endpoint it was obtained with.
func TestConfigClientSwitchReplacesToken(t *testing.T) {
	p := newProviderWithClient(t)
	p.AddClient(&testprovider.Client{ID: "other-client", Secret: testClientSecret, AuthMethod: "client_secret_basic"})
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil)

	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"client_id": "other-client"}))
	if issued, _ := p.Introspect(accessToken(readCreds(t, b, s, "app", nil))); issued.ClientID != "other-client" {
		t.Fatalf("after the config switched client the role was served a token of %q", issued.ClientID)
	}
}

// Item 5: a refresh token is never sent to another provider; it is kept, and works again when
// the config points back.
func TestRefreshTokenNeverSentToAnotherProvider(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = 10 * time.Minute
	b, s, _ := refreshTokenRole(t, p, "", nil)
	readCreds(t, b, s, "app", nil)
	chain := storedToken(t, s, "app").RefreshToken

	other := newProviderWithClient(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": other.TokenURL()}))
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/app", nil), "another client ID or provider")
	if other.Requests() != 0 {
		t.Fatal("the refresh token was sent to the new provider")
	}
	if storedToken(t, s, "app").RefreshToken != chain {
		t.Fatal("the stranded refresh token was discarded")
	}

	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
	if _, active := p.Introspect(accessToken(readCreds(t, b, s, "app", nil))); !active {
		t.Fatal("with the config restored the kept chain should work again")
	}
}

// Item 6: a cache fill that read storage before an invalidation does not cache what it read.
func TestInvalidationDuringCacheFillWins(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil)
	b.cache.tokens.drop("app")

	var replaced *tokenEntry
	s.onGet = func(key string) {
		if key != tokenPrefix+"app" || replaced != nil {
			return
		}
		// Another node stores a new token and invalidates the key while this read is at storage.
		s.onGet = nil
		replaced = &tokenEntry{AccessToken: "from-the-other-node", ExpiresAt: time.Now().Add(time.Hour), ObtainedAt: time.Now()}
		if err := putJSON(context.Background(), s.Storage, key, replaced); err != nil {
			t.Error(err)
		}
		b.invalidate(context.Background(), key)
	}
	if _, err := b.currentToken(context.Background(), s, "app"); err != nil {
		t.Fatal(err)
	}
	tok, err := b.currentToken(context.Background(), s, "app")
	if err != nil || tok.AccessToken != replaced.AccessToken {
		t.Fatal("the cache kept an entry older than the invalidation")
	}
}

// Item 6: a grant uses a client built from its own config, not one cached for another.
func TestClientFollowsConfig(t *testing.T) {
	b, _ := newTestBackend(t)
	short := &configEntry{Timeout: time.Second}
	long := &configEntry{Timeout: time.Minute}
	c1, err := b.client(short)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := b.client(long)
	c3, _ := b.client(&configEntry{Timeout: time.Minute})
	if c1 == c2 || c2 != c3 {
		t.Fatal("the client must be built per (ca_pem, timeout) and reused for the same pair")
	}
}

// Item 7: readers cannot make the plugin hammer the provider; the 401-recovery use still works.
func TestForcedReadsAreBounded(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	clock := clockOf(b)
	clock.Pin(time.Now())
	readCreds(t, b, s, "app", nil)

	before := p.Requests()
	var warned int
	for range 20 {
		if resp := readCreds(t, b, s, "app", forcing); len(resp.Warnings) > 0 {
			warned++
		}
	}
	if grants := p.Requests() - before; grants != 1 || warned < 19 {
		t.Fatalf("20 forcing reads made %d grants (%d warned), want 1", grants, warned)
	}
	clock.Advance(forcedGrantInterval)
	rejected := accessToken(readCreds(t, b, s, "app", nil))
	if got := accessToken(readCreds(t, b, s, "app", forcing)); got == rejected {
		t.Fatal("a forcing read after the interval should obtain a new token")
	}
}

// Item 8: the lifetime is counted from the request, not from the (slow) answer.
func TestLifetimeCountsFromRequestStart(t *testing.T) {
	p := newProviderWithClient(t)
	p.TokenTTL = time.Minute
	b, s := configured(t, p)
	p.Intercept = func(http.ResponseWriter, *http.Request) bool {
		time.Sleep(1100 * time.Millisecond) // a slow provider, not synchronisation
		return false
	}
	readCreds(t, b, s, "app", nil)
	if life := storedToken(t, s, "app").lifetime(); life != time.Minute {
		t.Fatalf("a 60 s token answered after 1.1 s is recorded as living %s", life)
	}
}

// Item 8: expires_in of zero or less makes the answer unusable, not a default-lifetime token.
func TestNonPositiveExpiresInIsRefused(t *testing.T) {
	for _, v := range []string{"0", "-5", `"0"`} {
		t.Run(v, func(t *testing.T) {
			p := newProviderWithClient(t)
			b, s := configured(t, p)
			p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
				w.Header().Set("Content-Type", "application/json")
				_, _ = fmt.Fprintf(w, `{"access_token":"at","token_type":"Bearer","expires_in":%s}`, v)
				return true
			}
			resp, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil)
			if err == nil || !strings.Contains(err.Error(), "expires_in") {
				t.Fatalf("want an invalid token response naming expires_in, got %v %v", resp, err)
			}
		})
	}
}

// Item 8: no token is served in its last seconds, whatever the refresh settings, and a role can
// override a config setting with 0.
func TestRefreshFloorAndZeroOverride(t *testing.T) {
	tok := &tokenEntry{AccessToken: "at", ExpiresAt: time.Unix(100, 500e6)}
	if left := tok.remaining(time.Unix(100, 0)); left != 0 {
		t.Fatalf("a token with half a second left has %s to serve", left)
	}
	if th := refreshThreshold(refreshPolicy{}, time.Hour); th != minRefreshLeft {
		t.Fatalf("zero refresh settings give a threshold of %s, want %s", th, minRefreshLeft)
	}
	cfg := &configEntry{refreshPolicy: refreshPolicy{RefreshBuffer: 30 * time.Minute, RefreshFraction: 0.5}}
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/r", map[string]any{"refresh_buffer": 0, "refresh_fraction": 0.1}))
	role, _ := b.role(context.Background(), s, "r")
	if p := effectivePolicy(role, cfg); p.RefreshBuffer != 0 || p.RefreshFraction != 0.1 {
		t.Fatalf("the role's explicit 0 should override the config's buffer: %+v", p)
	}
}

// Item 9: with no valid token left, reads still honour Retry-After, min_seconds or not.
func TestReadsWithoutTokenHonourRetryAfter(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	if _, err := requestErr(b, s, logical.ReadOperation, "creds/app", nil); err == nil {
		t.Fatal("precondition: the first read fails")
	}
	for _, data := range []map[string]any{nil, forcing} {
		before := p.Requests()
		_, err := requestErr(b, s, logical.ReadOperation, "creds/app", data)
		if p.Requests() != before || err == nil || !strings.Contains(err.Error(), "retry after") {
			t.Fatalf("a read within Retry-After called the provider or did not say why: %v", err)
		}
	}
}

// Item 10: clean waits for a grant under way, and no grant starts after it.
func TestCleanWaitsForGrantsUnderWay(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	p.Hold = make(chan struct{})
	done := readInFlight(t, p, b, s, nil)

	cleaned := make(chan struct{})
	go func() {
		b.clean(context.Background())
		close(cleaned)
	}()
	select {
	case <-cleaned:
		t.Fatal("clean returned while a grant was under way")
	case <-done:
		t.Fatal("the grant ended before the provider answered")
	default:
	}
	close(p.Hold)
	mustSucceed(t, <-done)
	<-cleaned
	before := p.Requests()
	if _, err := requestErr(b, s, logical.ReadOperation, "creds/app", forcing); err == nil || p.Requests() != before {
		t.Fatal("a grant started after clean")
	}
}

// Item 10: a role written while the refresh queue is rebuilt is in the rebuilt queue.
func TestQueueRebuildKeepsRolesWrittenMeanwhile(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	s.onList = func() {
		s.onList = nil
		mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/late", nil))
	}
	initialize(t, b, s)
	if _, ok := queued(b, "late"); !ok {
		t.Fatal("a role written during the rebuild is missing from the queue")
	}
}

// Item 11: secret token parameters are sent but never shown; bad ones are refused unechoed.
func TestSecretTokenParams(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	const secret = "api-key-value-0123456789"
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"secret_token_params": []any{"api_key=" + secret}}))
	read := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app", nil))
	if strings.Contains(fmt.Sprint(read.Data), secret) || fmt.Sprint(read.Data["secret_token_param_names"]) != "[api_key]" {
		t.Fatalf("a role read must list the secret parameter's name only: %v", read.Data)
	}
	if issued, _ := p.Introspect(accessToken(readCreds(t, b, s, "app", nil))); fmt.Sprint(issued.Params["api_key"]) != "["+secret+"]" {
		t.Fatal("the secret parameter was not sent")
	}
	resp := request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"secret_token_params": []any{secret}})
	mustFailNaming(t, resp, "secret_token_params")
	if strings.Contains(resp.Error().Error(), secret) {
		t.Fatal("the refusal echoes the secret")
	}
}

// Item 11: an unparsable URL is not echoed with the credentials it may carry.
func TestBadURLErrorHidesUserinfo(t *testing.T) {
	b, s := newTestBackend(t)
	resp := request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": "https://user:hunter2@idp.example.com/%zz"})
	mustFailNaming(t, resp, "token_url")
	if strings.Contains(resp.Error().Error(), "hunter2") {
		t.Fatalf("the error echoes the URL's password: %v", resp.Error())
	}
}

// Item 11: deletes, like writes, are forwarded to the node that may write.
func TestDeletesAreForwarded(t *testing.T) {
	b, _ := newTestBackend(t)
	for _, path := range b.Paths {
		if op, ok := path.Operations[logical.DeleteOperation].(*framework.PathOperation); ok {
			if !op.ForwardPerformanceStandby || !op.ForwardPerformanceSecondary {
				t.Errorf("delete on %s is not forwarded", path.Pattern)
			}
		}
	}
}

// A role deleted and created again with the same import while a grant of its previous life is
// in flight starts from its own import: the old chain is neither used nor kept as stranded.
func TestRecreatedRoleIgnoresChainOfPreviousLife(t *testing.T) {
	p := newProviderWithClient(t)
	b, s, imported := refreshTokenRole(t, p, "", nil)
	role := map[string]any{"grant_type": "refresh_token", "client_id": testClientID, "client_secret": testClientSecret, "refresh_token": imported}
	p.Hold = make(chan struct{})
	done := readInFlight(t, p, b, s, nil)
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/app", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", role))
	close(p.Hold)
	<-done
	if e, err := s.Storage.Get(context.Background(), tokenPrefix+"app"); err != nil || e != nil {
		t.Fatal("the deleted role's grant stored a token for the new role")
	}
	// The import was spent by the deleted role's grant: the new role is told to import anew.
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/app", nil), "import a new one")
}

// Item 5 with a grant in flight: the config switches client while a refresh-token grant is held.
// The access token it brings is not stored, the refresh token it rotated to is kept (not sent to
// the new client), and restoring the config serves the role again from that chain.
func TestConfigClientSwitchDuringGrantKeepsRotatedRefreshToken(t *testing.T) {
	p := newProviderWithClient(t)
	p.AddClient(&testprovider.Client{ID: "other-client", Secret: testClientSecret, AuthMethod: "client_secret_basic"})
	imported := p.IssueRefreshToken(testClientID, "bob", "")
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"token_url": p.TokenURL(), "client_id": testClientID, "client_secret": testClientSecret,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"grant_type": "refresh_token", "refresh_token": imported}))

	p.Hold = make(chan struct{})
	done := readInFlight(t, p, b, s, nil)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"client_id": "other-client"}))
	close(p.Hold)
	mustFailNaming(t, <-done, "changed")

	kept := storedToken(t, s, "app")
	if kept.AccessToken != "" || p.RefreshTokenValid(imported) || !p.RefreshTokenValid(kept.RefreshToken) {
		t.Fatal("the role must hold the rotated refresh token and no access token of the old client")
	}
	requests := p.Requests()
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/app", nil), "another client ID or provider")
	if p.Requests() != requests {
		t.Fatal("the old client's refresh token was sent for the new client")
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"client_id": testClientID}))
	if issued, active := p.Introspect(accessToken(readCreds(t, b, s, "app", nil))); !active || issued.ClientID != testClientID {
		t.Fatal("with the client restored the kept chain should serve the role again")
	}
}
