package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/faultproxy"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// The provider fault matrix: the real test provider behind internal/faultproxy, the backend
// configured against the proxy over TLS, every scenario with a still-valid token cached and with
// none, for a client_credentials role and for a refresh_token role (whose rotated refresh token
// must never be lost).

const (
	matrixTokenTTL   = 30 * time.Minute
	matrixDefaultTTL = 20 * time.Minute
	// matrixAge puts the cached token past its refresh threshold (half its life) but still valid.
	matrixAge = 20 * time.Minute
)

// faultWant is what an application must see in a fault scenario.
type faultWant struct {
	// internal: the provider is unreachable or failing (Vault answers 500); otherwise it rejected
	// the request (400).
	internal bool
	// phrases must all appear in the error (no token cached) or the warning (token cached).
	phrases []string
}

// quirkWant is the token a quirky but successful response must yield.
type quirkWant struct {
	expiresIn time.Duration
}

var faultMatrix = []struct {
	scenario faultproxy.Scenario
	fault    *faultWant
	quirk    *quirkWant
}{
	{scenario: faultproxy.HTML500, fault: &faultWant{internal: true, phrases: []string{"HTTP 500 Internal Server Error"}}},
	{scenario: faultproxy.HTML502, fault: &faultWant{internal: true, phrases: []string{"HTTP 502 Bad Gateway"}}},
	{scenario: faultproxy.HTML503, fault: &faultWant{internal: true, phrases: []string{"HTTP 503 Service Unavailable"}}},
	{scenario: faultproxy.RetryAfterSeconds, fault: &faultWant{internal: true, phrases: []string{"HTTP 429 Too Many Requests", "retry after 30s"}}},
	{scenario: faultproxy.RetryAfterDate, fault: &faultWant{internal: true, phrases: []string{"HTTP 503 Service Unavailable", "(retry after "}}},
	{scenario: faultproxy.Hang, fault: &faultWant{internal: true, phrases: []string{"in time"}}},
	{scenario: faultproxy.Refuse, fault: &faultWant{internal: true, phrases: []string{"connection refused"}}},
	{scenario: faultproxy.UntrustedTLS, fault: &faultWant{internal: true, phrases: []string{"certificate signed by unknown authority"}}},
	{scenario: faultproxy.Garbage, fault: &faultWant{internal: true, phrases: []string{"invalid token response"}}},
	{scenario: faultproxy.NoAccessToken, fault: &faultWant{internal: true, phrases: []string{"missing access_token"}}},
	{scenario: faultproxy.HugeBody, fault: &faultWant{internal: true, phrases: []string{"invalid token response"}}},
	{scenario: faultproxy.Trickle, fault: &faultWant{internal: true, phrases: []string{"in time"}}},
	{scenario: faultproxy.InvalidGrant, fault: &faultWant{phrases: []string{"HTTP 400 Bad Request", `error="invalid_grant"`, `error_description="` + faultproxy.ErrorDescription + `"`}}},
	{scenario: faultproxy.InvalidClient, fault: &faultWant{phrases: []string{"HTTP 401 Unauthorized", `error="invalid_client"`, `error_description="` + faultproxy.ErrorDescription + `"`}}},
	{scenario: faultproxy.ExpiresInString, quirk: &quirkWant{expiresIn: matrixTokenTTL}},
	{scenario: faultproxy.NoExpiresIn, quirk: &quirkWant{expiresIn: matrixDefaultTTL}},
	{scenario: faultproxy.NoTokenType, quirk: &quirkWant{expiresIn: matrixTokenTTL}},
	{scenario: faultproxy.FormEncoded, quirk: &quirkWant{expiresIn: matrixTokenTTL}},
	{scenario: faultproxy.LowercaseTokenType, quirk: &quirkWant{expiresIn: matrixTokenTTL}},
}

func TestProviderFaultMatrix(t *testing.T) {
	if len(faultMatrix) != len(faultproxy.Scenarios)-1 {
		t.Fatalf("the matrix covers %d scenarios; the proxy has %d besides none", len(faultMatrix), len(faultproxy.Scenarios)-1)
	}
	for _, grant := range []string{grantClientCredentials, grantRefreshToken} {
		for _, tc := range faultMatrix {
			for _, cached := range []bool{true, false} {
				name := fmt.Sprintf("%s/%s/cached=%v", grant, tc.scenario, cached)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					env := newFaultEnv(t, grant)
					if cached {
						env.cacheToken(t)
					}
					before := env.s.snapshot(t)
					env.setScenario(t, tc.scenario)
					resp, err := requestErr(env.b, env.s, logical.ReadOperation, "creds/app", nil)

					if tc.scenario == faultproxy.HugeBody {
						checkReadCapped(t, env.proxy)
					}
					if tc.quirk != nil {
						env.checkQuirk(t, tc.quirk, resp, err)
					} else {
						env.checkFault(t, tc.fault, before, resp, err)
					}
					env.checkNoSecrets(t, resp, err)
					env.checkRecovers(t)
				})
			}
		}
	}
}

// faultEnv is one backend configured, over TLS, against the test provider behind a fault proxy.
type faultEnv struct {
	grant    string
	provider *testprovider.Provider
	proxy    *faultproxy.Proxy
	b        *backend
	s        *faultyStorage
	logs     *lockedBuffer
	// secrets are every secret the backend has held: they must never surface.
	secrets []string
	// cached is the access token cached before the fault, if any.
	cached string
}

func newFaultEnv(t *testing.T, grant string) *faultEnv {
	t.Helper()
	p := newProviderWithClient(t)
	p.TokenTTL = matrixTokenTTL
	proxy, err := faultproxy.Start(p.URL, faultproxy.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })

	env := &faultEnv{grant: grant, provider: p, proxy: proxy, logs: &lockedBuffer{}, secrets: []string{testClientSecret}}
	env.b, env.s = newLoggedBackend(t, env.logs)
	mustSucceed(t, request(t, env.b, env.s, logical.UpdateOperation, "config", map[string]any{
		"token_url": proxy.URL() + "/token", "ca_pem": proxy.CAPEM(), "timeout": 1,
		"client_id": testClientID, "client_secret": testClientSecret,
	}))
	role := map[string]any{"grant_type": grant, "scopes": "read,write", "default_ttl": int(matrixDefaultTTL.Seconds())}
	if grant == grantRefreshToken {
		rt := p.IssueRefreshToken(testClientID, "user-1", "read write")
		env.secrets = append(env.secrets, rt)
		role["refresh_token"] = rt
	}
	mustSucceed(t, request(t, env.b, env.s, logical.UpdateOperation, "roles/app", role))
	return env
}

// newLoggedBackend is newTestBackend with the backend's log captured.
func newLoggedBackend(t *testing.T, logs *lockedBuffer) (*backend, *faultyStorage) {
	t.Helper()
	storage := &faultyStorage{Storage: &logical.InmemStorage{}}
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	b := newBackend(&testClock{}, oauthclient.NewClient)
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	return b, storage
}

// cacheToken obtains a token through the healthy proxy, then ages it past its refresh threshold
// so that the next read asks the provider while the token is still valid.
func (e *faultEnv) cacheToken(t *testing.T) {
	t.Helper()
	e.cached = readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)
	e.secrets = append(e.secrets, e.cached, e.storedToken(t).RefreshToken)
	clockOf(e.b).Shift(matrixAge)
}

func (e *faultEnv) setScenario(t *testing.T, s faultproxy.Scenario) {
	t.Helper()
	if err := e.proxy.SetScenario(s); err != nil {
		t.Fatal(err)
	}
}

func (e *faultEnv) storedToken(t *testing.T) *tokenEntry {
	t.Helper()
	tok := new(tokenEntry)
	if _, err := getJSON(context.Background(), e.s.Storage, tokenPrefix+"app", tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

// checkFault asserts the cached token is served with a warning (or, with none, an error of the
// right kind), that both name the failure, and that storage kept everything but bookkeeping.
func (e *faultEnv) checkFault(t *testing.T, want *faultWant, before map[string]string, resp *logical.Response, err error) {
	t.Helper()
	var msg string
	switch {
	case e.cached != "":
		if err != nil || resp == nil || resp.IsError() {
			t.Fatalf("with a valid token cached the read must succeed; got %v / %v", resp, err)
		}
		if resp.Data["access_token"] != e.cached {
			t.Fatal("the still-valid cached token was not served")
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "serving the cached token") {
			t.Fatalf("want one warning about serving the cached token, got %q", resp.Warnings)
		}
		if resp.Secret.TTL > matrixTokenTTL-matrixAge {
			t.Errorf("the lease (%s) outlives the cached token", resp.Secret.TTL)
		}
		msg = resp.Warnings[0]
	case want.internal:
		if err == nil {
			t.Fatalf("an unreachable or failing provider must be an internal error, got %#v", resp)
		}
		msg = err.Error()
	default:
		if err != nil || resp == nil || !resp.IsError() {
			t.Fatalf("a provider rejection must be a 400, got %#v / %v", resp, err)
		}
		msg = resp.Error().Error()
	}
	for _, phrase := range want.phrases {
		if !strings.Contains(msg, phrase) {
			t.Errorf("%q does not name %q", msg, phrase)
		}
	}
	if strings.Contains(msg, "upstream says no") || strings.Contains(msg, "AAAAAAAA") {
		t.Errorf("the provider's body is echoed: %q", msg)
	}

	after := e.s.snapshot(t)
	for _, key := range []string{configPath, rolePrefix + "app"} {
		if before[key] != after[key] {
			t.Errorf("%s changed on a failed grant", key)
		}
	}
	var was tokenEntry
	if raw, ok := before[tokenPrefix+"app"]; ok {
		if err := json.Unmarshal([]byte(raw), &was); err != nil {
			t.Fatal(err)
		}
	}
	now := e.storedToken(t)
	if tokenPart(now) != tokenPart(&was) {
		t.Errorf("the stored token changed on a failed grant:\nbefore %+v\nafter  %+v", tokenPart(&was), tokenPart(now))
	}
	if now.LastError == "" || now.ConsecutiveFailures != was.ConsecutiveFailures+1 {
		t.Errorf("the failure is not recorded: last_error=%q consecutive=%d", now.LastError, now.ConsecutiveFailures)
	}
	for _, phrase := range want.phrases {
		if !strings.Contains(now.LastError, phrase) {
			t.Errorf("last_error %q does not name %q", now.LastError, phrase)
		}
	}
}

// checkReadCapped asserts that the client stopped reading a huge body long before its end.
func checkReadCapped(t *testing.T, proxy *faultproxy.Proxy) {
	t.Helper()
	waitFor(t, func() bool { return proxy.Stats().LastBodyBytes > 0 })
	got := proxy.Stats().LastBodyBytes
	t.Logf("the proxy got %d bytes of a %d-byte body out before the client hung up", got, faultproxy.HugeBodyBytes)
	if got >= faultproxy.HugeBodyBytes/4 {
		t.Errorf("the client read %d bytes of a huge body; reads must be capped near %d", got, oauthclient.MaxResponseBytes)
	}
}

// tokenPart is a token entry without its failure bookkeeping.
func tokenPart(t *tokenEntry) tokenEntry {
	return tokenEntry{
		AccessToken: t.AccessToken, TokenType: t.TokenType, IDToken: t.IDToken, Scope: t.Scope,
		ExpiresAt: t.ExpiresAt, ObtainedAt: t.ObtainedAt, RefreshToken: t.RefreshToken, Grants: t.Grants,
	}
}

// checkQuirk asserts that a quirky response still yields the provider's token, normalised, and
// that the token (and any rotated refresh token) was stored before it was served.
func (e *faultEnv) checkQuirk(t *testing.T, want *quirkWant, resp *logical.Response, err error) {
	t.Helper()
	if err != nil || resp == nil || resp.IsError() {
		t.Fatalf("a quirky but valid token response must be accepted; got %v / %v", resp, err)
	}
	if len(resp.Warnings) != 0 {
		t.Errorf("unexpected warnings %q", resp.Warnings)
	}
	at := resp.Data["access_token"].(string)
	e.secrets = append(e.secrets, at)
	if at == e.cached {
		t.Fatal("the cached token was served instead of the new one")
	}
	if issued, active := e.provider.Introspect(at); !active || issued.ClientID != testClientID {
		t.Fatalf("the token served is not one the provider issued: %+v", issued)
	}
	if resp.Data["token_type"] != "Bearer" || resp.Data["scope"] != "read write" {
		t.Errorf("token_type/scope not normalised: %v / %v", resp.Data["token_type"], resp.Data["scope"])
	}
	if got := time.Duration(resp.Data["expires_in"].(int64)) * time.Second; got > want.expiresIn || got < want.expiresIn-10*time.Second {
		t.Errorf("expires_in = %s, want about %s", got, want.expiresIn)
	}
	stored := e.storedToken(t)
	if stored.AccessToken != at {
		t.Error("the served token is not the stored one")
	}
	if e.grant == grantRefreshToken {
		e.secrets = append(e.secrets, stored.RefreshToken)
		if !e.provider.RefreshTokenValid(stored.RefreshToken) {
			t.Error("the rotated refresh token was not stored")
		}
	}
}

// checkNoSecrets asserts that no secret reached the error, the warnings, storage bookkeeping or
// the backend's log.
func (e *faultEnv) checkNoSecrets(t *testing.T, resp *logical.Response, err error) {
	t.Helper()
	texts := map[string]string{"log": e.logs.String(), "last_error": e.storedToken(t).LastError}
	if err != nil {
		texts["error"] = err.Error()
	}
	if resp != nil {
		texts["warnings"] = strings.Join(resp.Warnings, "\n")
		if resp.IsError() {
			texts["error"] = resp.Error().Error()
		}
	}
	for where, text := range texts {
		for _, secret := range e.secrets {
			if secret != "" && strings.Contains(text, secret) {
				t.Errorf("a secret (%.6s…) appears in the %s: %q", secret, where, text)
			}
		}
	}
}

// checkRecovers asserts the backend serves a fresh token once the provider is healthy again; for
// the refresh_token grant that proves the refresh token survived the fault.
func (e *faultEnv) checkRecovers(t *testing.T) {
	t.Helper()
	e.setScenario(t, faultproxy.None)
	if retryAt := e.storedToken(t).RetryAt; !retryAt.IsZero() {
		// The provider asked for a pause: no read calls it before then, min_seconds or not.
		requests := e.provider.Requests()
		resp, err := requestErr(e.b, e.s, logical.ReadOperation, "creds/app", map[string]any{"min_seconds": int(matrixTokenTTL.Seconds())})
		if e.provider.Requests() != requests {
			t.Fatal("a read called the provider before its Retry-After")
		}
		msg := fmt.Sprint(err)
		if resp != nil {
			msg += fmt.Sprint(resp.Warnings, resp.Error())
		}
		if !strings.Contains(msg, "retry after") {
			t.Fatalf("the read should say when the provider may be asked again, got %s", msg)
		}
		clockOf(e.b).Pin(retryAt.Add(time.Second))
	}
	resp := readCreds(t, e.b, e.s, "app", map[string]any{"min_seconds": int((matrixDefaultTTL + time.Minute).Seconds())})
	at := resp.Data["access_token"].(string)
	if _, active := e.provider.Introspect(at); !active {
		t.Fatal("after the fault the backend does not obtain tokens again")
	}
}

// lockedBuffer is a log sink safe for concurrent writers and readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
