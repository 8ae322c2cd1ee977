//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/faultproxy"
)

// The provider fault matrix (issue 7) through the real Vault: the real provider behind
// internal/faultproxy over TLS, a mount of its own configured against the proxy, and every
// scenario with a still-valid token cached and with none, for a client_credentials role and for
// a refresh_token role (whose rotated refresh token must survive every fault).
//
// After a Retry-After (429 with seconds, 503 with an HTTP-date) no caller may call the provider
// before the retry time: the matrix checks that reads, forced reads and rotate fail fast (or serve
// the cached token) without reaching the proxy, that the retry time is the one asked for, and that
// the mount recovers at once for a role the provider did not hold back. Those retry times are
// 30 s and 2 minutes (fixed in internal/faultproxy), so the same role's recovery after its retry
// time, through the refresh token it held, is proved by TestRefresh/recovery/retry_after, where
// the wait overlaps the refresher's one-minute ticks instead of lengthening the matrix.

const (
	faultTokenTTL   = 1800 // the fault clients' access-token lifetime (s)
	faultDefaultTTL = 1200 // the roles' default_ttl: the lifetime when the provider sends none
	faultTimeout    = 3    // the mount's provider timeout (s): hang and trickle cost this much
)

// forceGrant as min_seconds makes a read ask the provider although a valid token is cached.
var forceGrant = url.Values{"min_seconds": {strconv.Itoa(2 * faultTokenTTL)}}

// e2eFault is what a scenario must look like through Vault's API.
type e2eFault struct {
	scenario faultproxy.Scenario
	// status is Vault's answer with no token cached; 0 marks a quirk, whose read succeeds.
	status int
	// phrases must all appear in that error, and in the warning when a token is cached.
	phrases []string
	// expiresIn is a quirk's token lifetime (s).
	expiresIn int64
}

var e2eFaults = []e2eFault{
	{scenario: faultproxy.HTML500, status: 500, phrases: []string{"HTTP 500 Internal Server Error"}},
	{scenario: faultproxy.HTML502, status: 500, phrases: []string{"HTTP 502 Bad Gateway"}},
	{scenario: faultproxy.HTML503, status: 500, phrases: []string{"HTTP 503 Service Unavailable"}},
	{scenario: faultproxy.RetryAfterSeconds, status: 500, phrases: []string{"HTTP 429 Too Many Requests", "retry after 30s"}},
	{scenario: faultproxy.RetryAfterDate, status: 500, phrases: []string{"HTTP 503 Service Unavailable", "(retry after "}},
	{scenario: faultproxy.Hang, status: 500, phrases: []string{"in time"}},
	{scenario: faultproxy.Refuse, status: 500, phrases: []string{"connection refused"}},
	{scenario: faultproxy.UntrustedTLS, status: 500, phrases: []string{"certificate signed by unknown authority"}},
	{scenario: faultproxy.Garbage, status: 500, phrases: []string{"invalid token response"}},
	{scenario: faultproxy.NoAccessToken, status: 500, phrases: []string{"missing access_token"}},
	{scenario: faultproxy.HugeBody, status: 500, phrases: []string{"invalid token response"}},
	{scenario: faultproxy.Trickle, status: 500, phrases: []string{"in time"}},
	{scenario: faultproxy.InvalidGrant, status: 400, phrases: []string{"HTTP 400 Bad Request", `error="invalid_grant"`, `error_description="` + faultproxy.ErrorDescription + `"`}},
	{scenario: faultproxy.InvalidClient, status: 400, phrases: []string{"HTTP 401 Unauthorized", `error="invalid_client"`, `error_description="` + faultproxy.ErrorDescription + `"`}},
	{scenario: faultproxy.ExpiresInString, expiresIn: faultTokenTTL},
	{scenario: faultproxy.NoExpiresIn, expiresIn: faultDefaultTTL},
	{scenario: faultproxy.NoTokenType, expiresIn: faultTokenTTL},
	{scenario: faultproxy.FormEncoded, expiresIn: faultTokenTTL},
	{scenario: faultproxy.LowercaseTokenType, expiresIn: faultTokenTTL},
}

// bodyEchoes are pieces of the proxy's injected bodies: an error must describe them, not quote them.
var bodyEchoes = []string{"upstream says no", "Login required", "AAAAAAAAAAAA", "trickled-token"}

func TestProviderFaultMatrix(t *testing.T) {
	if len(e2eFaults) != len(faultproxy.Scenarios)-1 {
		t.Fatalf("the matrix covers %d scenarios; the proxy has %d besides none", len(e2eFaults), len(faultproxy.Scenarios)-1)
	}
	var run, survived atomic.Int32
	t.Cleanup(func() {
		t.Logf("provider fault matrix through Vault: %d of %d scenario runs survived", survived.Load(), run.Load())
	})
	for _, grant := range []string{"client_credentials", "refresh_token"} {
		t.Run(grant, func(t *testing.T) {
			t.Parallel()
			m := newFaultMount(t, grant)
			for _, f := range e2eFaults {
				for _, cached := range []bool{true, false} {
					t.Run(fmt.Sprintf("%s/cached=%v", f.scenario, cached), func(t *testing.T) {
						run.Add(1)
						m.runCase(t, f, cached)
						if !t.Failed() {
							survived.Add(1)
						}
					})
				}
			}
		})
	}
}

// faultMount is a mount configured, over TLS, against the provider behind a fault proxy of its own.
type faultMount struct {
	grant, path            string
	clientID, clientSecret string
	proxy                  *faultproxy.Proxy
	client                 *api.Client // root, without the API client's retries of 5xx answers
	plugins                []int       // the plugin processes serving it, which must outlive every fault
}

func newFaultMount(t *testing.T, grant string) *faultMount {
	t.Helper()
	proxy, tokenURL := startTokenProxy(t)

	metadata := map[string]any{"access_token_ttl": faultTokenTTL}
	if grant == "refresh_token" {
		metadata["grant_types"] = []string{"password", "refresh_token"}
	}
	m := &faultMount{grant: grant, path: newMount(t, "faults-"+strings.ReplaceAll(grant, "_", "-")), proxy: proxy}
	var err error
	m.client, err = env.client.Clone()
	must(t, err)
	m.client.SetToken(env.client.Token())
	// One read, one grant: a retried 500 would repeat each fault (and its timeout) three times.
	m.client.SetMaxRetries(0)
	m.clientID, m.clientSecret = registerClient(t, metadata)
	mustWrite(t, m.client, m.path+"/config", map[string]any{
		"token_url": proxy.URL() + tokenURL.Path, "ca_pem": proxy.CAPEM(), "timeout": faultTimeout,
		"client_id": m.clientID, "client_secret": m.clientSecret,
	})
	if m.plugins = pluginPIDs(t); len(m.plugins) == 0 {
		t.Fatal("no plugin process found under the Vault server")
	}
	return m
}

// runCase runs one scenario on a role of its own, with a valid token cached or with none.
func (m *faultMount) runCase(t *testing.T, f e2eFault, cached bool) {
	c := m.client
	role := fmt.Sprintf("%s-%s", strings.ReplaceAll(string(f.scenario), "_", "-"), map[bool]string{true: "cached", false: "none"}[cached])
	creds, rolePath := m.path+"/creds/"+role, m.path+"/roles/"+role
	secrets, imported := m.writeRole(t, role)
	t.Cleanup(func() {
		// The refresher must not retry this role while later scenarios run.
		if code, msg := vaultDelete(t, c, rolePath); code/100 != 2 {
			t.Errorf("deleting %s: HTTP %d: %s", rolePath, code, msg)
		}
	})

	// Even a failed case hands the next one a healthy provider.
	t.Cleanup(func() { _ = m.proxy.SetScenario(faultproxy.None) })

	var cachedToken string
	params := url.Values(nil)
	if cached {
		cachedToken = str(mustRead(t, c, creds).Data["access_token"])
		secrets = append(secrets, cachedToken)
		params = forceGrant
	}
	config0, role0 := mustRead(t, c, m.path+"/config").Data, mustRead(t, c, rolePath).Data

	m.setScenario(t, f.scenario)
	faultStart := time.Now()
	s, code, msg := vaultRead(t, c, creds, params)
	faultEnd := time.Now()
	var warnings []string
	if s != nil {
		warnings = s.Warnings
	}
	t.Logf("HTTP %d; error %q; warnings %q", code, msg, warnings)
	if f.scenario == faultproxy.HugeBody && cached {
		// The first huge body this proxy sends (cached=true runs first): the count is this read's.
		m.checkReadCapped(t)
	}
	texts := append([]string{msg}, warnings...)
	switch {
	case f.status == 0:
		m.checkQuirk(t, f, s, code, msg, cachedToken)
	case cached:
		m.checkCachedServed(t, f, s, code, msg, cachedToken)
	default:
		if code != f.status {
			t.Errorf("with no token cached: HTTP %d, want %d", code, f.status)
		}
		checkNames(t, "the error", msg, f.phrases)
	}
	if f.status != 0 {
		st := mustRead(t, c, rolePath+"/status").Data
		checkNames(t, "the status's last_error", str(st["last_error"]), f.phrases)
		texts = append(texts, str(st["last_error"]))
	}
	checkNoSecretIn(t, texts, secrets)
	m.setScenario(t, faultproxy.None)

	m.checkAlive(t)
	if got := mustRead(t, c, m.path+"/config").Data; !reflect.DeepEqual(got, config0) {
		t.Errorf("config changed:\n got %v\nwant %v", got, config0)
	}
	if got := mustRead(t, c, rolePath).Data; !reflect.DeepEqual(got, role0) {
		t.Errorf("role changed:\n got %v\nwant %v", got, role0)
	}
	if cached && f.status != 0 {
		if got := str(mustRead(t, c, creds).Data["access_token"]); got != cachedToken {
			t.Error("after the fault the cached token is no longer served")
		}
	}
	switch {
	case isRetryAfter(f.scenario):
		m.checkRetryAfterHolds(t, f, rolePath, cached, cachedToken, faultStart, faultEnd)
		m.checkProviderChainUntouched(t, cached, cachedToken, imported)
		m.checkFreshRoleRecovers(t, role+"-fresh")
	case f.status == 0 && cached:
		m.checkForcedWindowThenRotate(t, rolePath, cachedToken, str(s.Data["access_token"]))
	default:
		m.checkRecovers(t, creds, cachedToken)
	}
}

func isRetryAfter(s faultproxy.Scenario) bool {
	return s == faultproxy.RetryAfterSeconds || s == faultproxy.RetryAfterDate
}

// writeRole creates the role and returns the secrets it was given, and the refresh token it
// imported (refresh_token grant).
func (m *faultMount) writeRole(t *testing.T, role string) (secrets []string, imported string) {
	t.Helper()
	data := map[string]any{"default_ttl": faultDefaultTTL}
	secrets = []string{m.clientSecret}
	if m.grant == "refresh_token" {
		imported = obtainRefreshToken(t, m.clientID, m.clientSecret)
		data["grant_type"], data["refresh_token"] = "refresh_token", imported
		secrets = append(secrets, imported)
	} else {
		data["scopes"] = "read"
	}
	mustWrite(t, m.client, m.path+"/roles/"+role, data)
	return secrets, imported
}

func (m *faultMount) setScenario(t *testing.T, s faultproxy.Scenario) {
	t.Helper()
	if err := m.proxy.SetScenario(s); err != nil {
		t.Fatal(err)
	}
}

// checkCachedServed: a failed grant with a valid token cached answers 200 with that token and a
// warning naming the failure.
func (m *faultMount) checkCachedServed(t *testing.T, f e2eFault, s *api.Secret, code int, msg, cachedToken string) {
	t.Helper()
	if code != http.StatusOK || s == nil {
		t.Fatalf("with a valid token cached the read must succeed: HTTP %d: %s", code, msg)
	}
	if str(s.Data["access_token"]) != cachedToken {
		t.Error("the still-valid cached token was not served")
	}
	warning := ""
	for _, w := range s.Warnings {
		if strings.Contains(w, "serving the cached token") {
			warning = w
		}
	}
	if warning == "" {
		t.Fatalf("no warning about serving the cached token: %q", s.Warnings)
	}
	checkNames(t, "the warning", warning, f.phrases)
}

// checkQuirk: a quirky but valid token response yields a new token, normalised.
func (m *faultMount) checkQuirk(t *testing.T, f e2eFault, s *api.Secret, code int, msg, cachedToken string) {
	t.Helper()
	if code != http.StatusOK || s == nil {
		t.Fatalf("a quirky but valid token response must be accepted: HTTP %d: %s", code, msg)
	}
	for _, w := range s.Warnings {
		if strings.Contains(w, "failed") {
			t.Errorf("unexpected warning %q", w)
		}
	}
	token := str(s.Data["access_token"])
	if token == cachedToken {
		t.Fatal("the cached token was served instead of a new one")
	}
	if in := introspect(t, token); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Fatalf("the token served is not one the provider issued to the client: %v", in)
	}
	if tt, sc := str(s.Data["token_type"]), str(s.Data["scope"]); tt != "Bearer" || sc != "read" {
		t.Errorf("token_type %q, scope %q; want Bearer, read", tt, sc)
	}
	if got := num(t, s.Data["expires_in"], "expires_in"); got > f.expiresIn || got < f.expiresIn-10 {
		t.Errorf("expires_in = %d, want about %d", got, f.expiresIn)
	}
	if lease := int64(s.LeaseDuration); lease > f.expiresIn || lease < f.expiresIn-10 {
		t.Errorf("lease %ds, want about %d", lease, f.expiresIn)
	}
}

// checkReadCapped: the plugin stopped reading a huge body long before its end.
func (m *faultMount) checkReadCapped(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.proxy.Stats().LastBodyBytes == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := m.proxy.Stats().LastBodyBytes
	t.Logf("the proxy got %d bytes of a %d-byte body out before the plugin hung up", got, faultproxy.HugeBodyBytes)
	if got == 0 || got >= faultproxy.HugeBodyBytes/4 {
		t.Errorf("the plugin read %d bytes of a huge body; reads must be capped", got)
	}
}

// checkAlive: Vault is healthy and the plugin processes that served the mount before still do.
func (m *faultMount) checkAlive(t *testing.T) {
	t.Helper()
	h, err := env.client.Sys().Health()
	if err != nil || !h.Initialized || h.Sealed {
		t.Fatalf("Vault is not healthy after the fault: %+v, %v", h, err)
	}
	now := pluginPIDs(t)
	for _, pid := range m.plugins {
		if !slices.Contains(now, pid) {
			t.Fatalf("plugin process %d is gone (plugin processes now: %v)", pid, now)
		}
	}
}

// checkRecovers: with the provider healthy again a forced read makes a new grant that succeeds,
// which for the refresh_token grant proves the stored refresh token survived. (The fault's forced
// read, if any, obtained nothing, so the cached token is not one obtained by force.)
func (m *faultMount) checkRecovers(t *testing.T, creds, cachedToken string) {
	t.Helper()
	forwarded := m.proxy.Stats().Forwarded
	s, code, msg := vaultRead(t, m.client, creds, forceGrant)
	if code != http.StatusOK || s == nil {
		t.Fatalf("with the provider healthy again the read fails: HTTP %d: %s", code, msg)
	}
	token := str(s.Data["access_token"])
	if token == cachedToken {
		t.Fatalf("with the provider healthy again min_seconds did not obtain a new token (warnings %q)", s.Warnings)
	}
	if n := m.proxy.Stats().Forwarded - forwarded; n != 1 {
		t.Errorf("the recovery read made %d grant(s) at the provider, want 1", n)
	}
	if in := introspect(t, token); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Fatalf("the token after recovery is not active for the client: %v", in)
	}
}

// checkForcedWindowThenRotate: a quirk's forced read obtained quirkToken by force moments ago, so
// a forced read now is served that token with a warning and calls nobody (at most one forced
// grant per role per 5 s); rotate, which that bound does not hold, then obtains a new token
// through the role's stored grant: for the refresh_token grant, the refresh token the quirky
// answer carried.
func (m *faultMount) checkForcedWindowThenRotate(t *testing.T, rolePath, cachedToken, quirkToken string) {
	t.Helper()
	creds := strings.Replace(rolePath, "/roles/", "/creds/", 1)
	requests := m.proxy.Stats().Requests
	s, code, msg := vaultRead(t, m.client, creds, forceGrant)
	if code != http.StatusOK || s == nil {
		t.Fatalf("a forced read right after a forced grant fails: HTTP %d: %s", code, msg)
	}
	if got := str(s.Data["access_token"]); got != quirkToken {
		t.Errorf("a forced read right after a forced grant was not served the token that grant obtained (the one cached before it: %v)", got == cachedToken)
	}
	if n := m.proxy.Stats().Requests - requests; n != 0 {
		t.Errorf("a forced read right after a forced grant called the provider %d time(s)", n)
	}
	explained := false
	for _, w := range s.Warnings {
		explained = explained || (strings.Contains(w, "ago") && strings.Contains(w, "min_seconds"))
	}
	if !explained {
		t.Errorf("no warning says the token was obtained by force moments ago and when min_seconds may force again: %q", s.Warnings)
	}

	forwarded := m.proxy.Stats().Forwarded
	rot, code, msg := vaultWrite(t, m.client, strings.Replace(rolePath, "/roles/", "/rotate/", 1), map[string]any{})
	if code/100 != 2 || rot == nil {
		t.Fatalf("rotate after the quirk fails: HTTP %d: %s", code, msg)
	}
	if n := m.proxy.Stats().Forwarded - forwarded; n != 1 {
		t.Errorf("rotate made %d grant(s) at the provider, want 1", n)
	}
	token := str(mustRead(t, m.client, creds).Data["access_token"])
	if token == quirkToken || token == cachedToken {
		t.Fatal("after rotate the role does not serve a new token")
	}
	if in := introspect(t, token); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Fatalf("the token rotate obtained is not active for the client: %v", in)
	}
}

// retryAtPattern finds the retry time the plugin names when a Retry-After holds a role back.
var retryAtPattern = regexp.MustCompile(`retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)`)

// retryAtIn is the retry time (RFC 3339, whole seconds) named in one of texts.
func retryAtIn(texts []string) (time.Time, bool) {
	for _, text := range texts {
		if m := retryAtPattern.FindStringSubmatch(text); m != nil {
			if at, err := time.Parse(time.RFC3339, m[1]); err == nil {
				return at, true
			}
		}
	}
	return time.Time{}, false
}

// holdRead is a read during a Retry-After pause: forced (min_seconds) when a token is cached, as
// that is the read that would call the provider. It must not reach the provider, and must fail
// (no token cached) or serve the cached token with a warning, naming the retry time, which it
// returns.
func (m *faultMount) holdRead(t *testing.T, creds string, cached bool, cachedToken string, params url.Values) time.Time {
	t.Helper()
	requests := m.proxy.Stats().Requests
	s, code, msg := vaultRead(t, m.client, creds, params)
	if n := m.proxy.Stats().Requests - requests; n != 0 {
		t.Errorf("a read (%v) during the provider's Retry-After called it %d time(s)", params, n)
	}
	var texts []string
	if cached {
		if code != http.StatusOK || s == nil {
			t.Fatalf("during the provider's Retry-After, with a valid token cached, the read (%v) fails: HTTP %d: %s", params, code, msg)
		}
		if str(s.Data["access_token"]) != cachedToken {
			t.Error("during the provider's Retry-After the cached token was not served")
		}
		texts = s.Warnings
	} else {
		if code != http.StatusInternalServerError {
			t.Errorf("during the provider's Retry-After, with no token cached, the read (%v): HTTP %d, want 500", params, code)
		}
		texts = []string{msg}
	}
	if !containsText(texts, "retry after") {
		t.Errorf("the read (%v) during the provider's Retry-After does not name it: %q", params, texts)
	}
	at, ok := retryAtIn(texts)
	if !ok {
		t.Fatalf("the read (%v) during the provider's Retry-After names no retry time: %q", params, texts)
	}
	return at
}

// checkRetryAfterHolds: until the retry time the provider asked for, no caller reaches it: a
// read, a forced read and rotate fail fast naming "retry after" (or, with a valid token cached,
// the reads serve it with a warning), the retry time is the one the provider's answer asked for,
// and the refresher plans nothing before it.
func (m *faultMount) checkRetryAfterHolds(t *testing.T, f e2eFault, rolePath string, cached bool, cachedToken string, faultStart, faultEnd time.Time) {
	t.Helper()
	creds := strings.Replace(rolePath, "/roles/", "/creds/", 1)
	requests := m.proxy.Stats().Requests

	retryAt := m.holdRead(t, creds, cached, cachedToken, forceGrant)
	if !cached {
		if at := m.holdRead(t, creds, cached, cachedToken, nil); !at.Equal(retryAt) {
			t.Errorf("two reads name different retry times: %s and %s", retryAt, at)
		}
	}
	_, code, msg := vaultWrite(t, m.client, strings.Replace(rolePath, "/roles/", "/rotate/", 1), map[string]any{})
	if code/100 == 2 || !strings.Contains(msg, "retry after") {
		t.Errorf("rotate during the provider's Retry-After: HTTP %d %q, want an error naming \"retry after\"", code, msg)
	}
	if n := m.proxy.Stats().Requests - requests; n != 0 {
		t.Errorf("the provider was called %d time(s) during its Retry-After pause", n)
	}

	// The answer asked for 30 s, or for an HTTP-date 2 minutes ahead (whole seconds, as is the
	// retry time named).
	ahead := time.Duration(faultproxy.RetryAfterSecondsValue) * time.Second
	if f.scenario == faultproxy.RetryAfterDate {
		ahead = faultproxy.RetryAfterDateAhead
	}
	earliest, latest := faultStart.Add(ahead).Truncate(time.Second).Add(-time.Second), faultEnd.Add(ahead)
	if retryAt.Before(earliest) || retryAt.After(latest) {
		t.Errorf("the retry time is %s; the provider asked for %s from the fault (between %s and %s)",
			retryAt.Format(time.RFC3339), ahead, earliest.Format(time.RFC3339), latest.Format(time.RFC3339))
	}
	if time.Now().After(retryAt) {
		t.Fatalf("the checks ended after the retry time %s: they proved nothing", retryAt.Format(time.RFC3339))
	}
	if st := readStatus(t, m.client, rolePath+"/status"); st.NextRefresh.Before(retryAt) {
		t.Errorf("the status's next_refresh %s is before the retry time %s", st.NextRefresh.Format(time.RFC3339), retryAt.Format(time.RFC3339))
	}
	t.Logf("held back until %s (%s after the fault): reads, a forced read and rotate called nobody",
		retryAt.Format(time.RFC3339), retryAt.Sub(faultStart).Round(time.Second))
}

// checkProviderChainUntouched (refresh_token grant): the provider never saw the role's refresh
// token during the fault and the pause (the proxy answered the fault itself), and the chain is
// alive there: the access token cached before the fault is still active (presenting a spent
// refresh token would have revoked the whole grant), or the imported refresh token is unspent.
// That the plugin still holds the chain and uses it after the retry time is
// TestRefresh/recovery/retry_after's.
func (m *faultMount) checkProviderChainUntouched(t *testing.T, cached bool, cachedToken, imported string) {
	t.Helper()
	if m.grant != "refresh_token" {
		return
	}
	alive, what := cachedToken, "the access token cached before the fault"
	if !cached {
		alive, what = imported, "the imported refresh token"
	}
	if in := introspect(t, alive); in["active"] != true {
		t.Errorf("after the Retry-After, %s is no longer active at the provider: %v", what, in)
	}
}

// checkFreshRoleRecovers: a Retry-After holds back the role it was answered to, not the mount: a
// role created now obtains a token from the healthy provider at once.
func (m *faultMount) checkFreshRoleRecovers(t *testing.T, role string) {
	t.Helper()
	m.writeRole(t, role)
	rolePath := m.path + "/roles/" + role
	t.Cleanup(func() {
		if code, msg := vaultDelete(t, m.client, rolePath); code/100 != 2 {
			t.Errorf("deleting %s: HTTP %d: %s", rolePath, code, msg)
		}
	})
	forwarded := m.proxy.Stats().Forwarded
	s, code, msg := vaultRead(t, m.client, m.path+"/creds/"+role, nil)
	if code != http.StatusOK || s == nil {
		t.Fatalf("a role created after another role's Retry-After cannot obtain a token: HTTP %d: %s", code, msg)
	}
	if n := m.proxy.Stats().Forwarded - forwarded; n != 1 {
		t.Errorf("the new role's first read made %d grant(s) at the provider, want 1", n)
	}
	if in := introspect(t, str(s.Data["access_token"])); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Fatalf("the new role's token is not active for the client: %v", in)
	}
}

func checkNames(t *testing.T, what, text string, phrases []string) {
	t.Helper()
	for _, p := range phrases {
		if !strings.Contains(text, p) {
			t.Errorf("%s %q does not name %q", what, text, p)
		}
	}
	for _, echo := range bodyEchoes {
		if strings.Contains(text, echo) {
			t.Errorf("%s quotes the provider's body (%q): %q", what, echo, text)
		}
	}
}

func checkNoSecretIn(t *testing.T, texts, secrets []string) {
	t.Helper()
	for _, text := range texts {
		for _, secret := range secrets {
			if secret != "" && strings.Contains(text, secret) {
				t.Errorf("a secret (%s) appears in %q", fingerprint(secret), strings.ReplaceAll(text, secret, "<secret>"))
			}
		}
	}
}

// pluginPIDs lists the plugin's processes under the test's Vault server.
func pluginPIDs(t *testing.T) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.StateDir, "vault.pid"))
	must(t, err)
	vault := strings.TrimSpace(string(b))
	entries, err := os.ReadDir("/proc")
	must(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil || !strings.Contains(string(status), "\nPPid:\t"+vault+"\n") {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && strings.HasPrefix(filepath.Base(exe), e2eharness.PluginCmd) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func containsText(texts []string, sub string) bool {
	for _, s := range texts {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// testRetryAfterRecovery (run by TestRefresh, whose subtests wait for Vault's one-minute ticks, so
// that waiting out the fault proxy's 30 s and 2-minute retry times costs no wall time): for each
// form of Retry-After, with a token cached and with none, a refresh_token role is held back, by
// every caller, until the retry time the provider asked for (no request reaches the proxy before
// it: not from reads, forced reads or the refresher), and then recovers through the refresh token
// it held: the one the provider rotated to before the fault, or the imported one. This is the
// fault matrix's recovery check for the Retry-After scenarios, on a mount and proxy of its own.
func testRetryAfterRecovery(t *testing.T) {
	m := newFaultMount(t, "refresh_token")
	type heldRole struct {
		name, creds           string
		cached                bool
		cachedToken, imported string
		retryAt               time.Time
		recovered             bool
	}
	var roles []*heldRole
	for _, sc := range []faultproxy.Scenario{faultproxy.RetryAfterSeconds, faultproxy.RetryAfterDate} {
		var ofScenario []*heldRole
		for _, cached := range []bool{true, false} {
			name := fmt.Sprintf("%s-%s", strings.ReplaceAll(string(sc), "_", "-"), map[bool]string{true: "cached", false: "none"}[cached])
			_, imported := m.writeRole(t, name)
			r := &heldRole{name: name, creds: m.path + "/creds/" + name, cached: cached, imported: imported}
			if cached {
				r.cachedToken = str(mustRead(t, m.client, r.creds).Data["access_token"])
			}
			ofScenario = append(ofScenario, r)
		}
		m.setScenario(t, sc)
		for _, r := range ofScenario {
			params := url.Values(nil)
			if r.cached {
				params = forceGrant
			}
			requests := m.proxy.Stats().Requests
			s, code, msg := vaultRead(t, m.client, r.creds, params)
			if n := m.proxy.Stats().Requests - requests; n != 1 {
				t.Fatalf("set-up: the read of %s made %d request(s) to the proxy under %s, want 1", r.name, n, sc)
			}
			if r.cached && (code != http.StatusOK || s == nil || !containsText(s.Warnings, "retry after")) {
				t.Fatalf("set-up: %s under %s: HTTP %d %q, want the cached token with a warning naming the Retry-After", r.name, sc, code, msg)
			}
			if !r.cached && (code != http.StatusInternalServerError || !strings.Contains(msg, "retry after")) {
				t.Fatalf("set-up: %s under %s: HTTP %d %q, want 500 naming the Retry-After", r.name, sc, code, msg)
			}
		}
		// The next scenario's roles obtain their cached tokens from a healthy provider.
		m.setScenario(t, faultproxy.None)
		roles = append(roles, ofScenario...)
	}
	for _, r := range roles {
		r.retryAt = m.holdRead(t, r.creds, r.cached, r.cachedToken, forceGrant)
		t.Logf("%s: held back until %s (%s from now)", r.name, r.retryAt.Format(time.RFC3339), time.Until(r.retryAt).Round(time.Second))
	}

	// earliestHeld is the earliest retry time of the roles not recovered yet: no request may
	// reach the proxy before it. The time named is whole seconds, rounded down.
	earliestHeld := func() (at time.Time, names []string) {
		for _, r := range roles {
			if r.recovered {
				continue
			}
			if at.IsZero() || r.retryAt.Before(at) {
				at = r.retryAt
			}
			names = append(names, r.name)
		}
		return at, names
	}
	latest := roles[0].retryAt
	for _, r := range roles {
		if r.retryAt.After(latest) {
			latest = r.retryAt
		}
	}
	deadline := latest.Add(30 * time.Second)
	requests := m.proxy.Stats().Requests
	nextHoldCheck := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		held, names := earliestHeld()
		if len(names) == 0 {
			break
		}
		now := time.Now()
		if now.After(deadline) {
			t.Fatalf("roles %v did not recover within 30 s of their retry time", names)
		}
		if n := m.proxy.Stats().Requests; n != requests {
			if now.Before(held) {
				t.Errorf("%d request(s) reached the provider before %s, the retry time of %v", n-requests, held.Format(time.RFC3339), names)
			}
			requests = n
		}
		for _, r := range roles {
			switch {
			case r.recovered:
			case now.After(r.retryAt.Add(time.Second)):
				m.checkRecoveredAfterRetry(t, r.creds, r.cached, r.cachedToken, r.imported)
				t.Logf("%s recovered %s after its retry time", r.name, time.Since(r.retryAt).Round(time.Millisecond))
				r.recovered = true
				requests = m.proxy.Stats().Requests
			case now.After(nextHoldCheck) && now.Before(r.retryAt.Add(-time.Second)):
				if at := m.holdRead(t, r.creds, r.cached, r.cachedToken, forceGrant); !at.Equal(r.retryAt) {
					t.Errorf("%s: the retry time moved from %s to %s", r.name, r.retryAt.Format(time.RFC3339), at.Format(time.RFC3339))
				}
			}
		}
		if time.Now().After(nextHoldCheck) {
			nextHoldCheck = time.Now().Add(10 * time.Second)
		}
		<-tick.C
	}
}

// checkRecoveredAfterRetry: after its retry time the role obtains a new token (a forced read, if
// a token is cached) through the refresh token it held, and its status is clear again. The
// refresher may have obtained it first; either way it came from the role's own chain.
func (m *faultMount) checkRecoveredAfterRetry(t *testing.T, creds string, cached bool, cachedToken, imported string) {
	t.Helper()
	params := url.Values(nil)
	if cached {
		params = forceGrant
	}
	s, code, msg := vaultRead(t, m.client, creds, params)
	if code != http.StatusOK || s == nil {
		t.Errorf("%s after its retry time: HTTP %d: %s", creds, code, msg)
		return
	}
	token := str(s.Data["access_token"])
	if token == cachedToken {
		t.Errorf("%s after its retry time: no new token (warnings %q)", creds, s.Warnings)
		return
	}
	if in := introspect(t, token); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Errorf("%s after its retry time: the new token is not active for the client: %v", creds, in)
	}
	if !cached {
		if in := introspect(t, imported); in["active"] == true {
			t.Errorf("%s after its retry time: the imported refresh token is unspent, so the new token does not come from it", creds)
		}
	}
	st := readStatus(t, m.client, strings.Replace(creds, "/creds/", "/roles/", 1)+"/status")
	if st.LastError != "" || st.ConsecutiveFailures != 0 {
		t.Errorf("%s after recovering: last_error %q, consecutive_failures %d; want none", creds, st.LastError, st.ConsecutiveFailures)
	}
}

// startTokenProxy puts a TLS fault proxy in front of the provider's token endpoint host; it is
// closed (ending requests still held or hanging) when the test ends.
func startTokenProxy(t *testing.T) (*faultproxy.Proxy, *url.URL) {
	t.Helper()
	tokenURL, err := url.Parse(env.Discovery.TokenEndpoint)
	must(t, err)
	proxy, err := faultproxy.Start(tokenURL.Scheme+"://"+tokenURL.Host, faultproxy.Options{TLS: true})
	must(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	return proxy, tokenURL
}
