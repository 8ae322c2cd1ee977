//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/faultproxy"
)

// The provider fault matrix (issue 7) through the real Vault: the real provider behind
// internal/faultproxy over TLS, a mount of its own configured against the proxy, and every
// scenario with a still-valid token cached and with none, for a client_credentials role and for
// a refresh_token role (whose rotated refresh token must survive every fault).

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
	tokenURL, err := url.Parse(env.discovery.TokenEndpoint)
	must(t, err)
	proxy, err := faultproxy.Start(tokenURL.Scheme+"://"+tokenURL.Host, faultproxy.Options{TLS: true})
	must(t, err)
	t.Cleanup(func() { _ = proxy.Close() })

	metadata := map[string]any{"access_token_ttl": faultTokenTTL}
	if grant == "refresh_token" {
		metadata["grant_types"] = []string{"password", "refresh_token"}
	}
	m := &faultMount{grant: grant, path: newMount(t, "faults-"+strings.ReplaceAll(grant, "_", "-")), proxy: proxy}
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
	secrets := m.writeRole(t, role)
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
	s, code, msg := vaultRead(t, c, creds, params)
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
	m.checkRecovers(t, f, creds, cached, cachedToken)
}

// writeRole creates the role and returns the secrets it was given.
func (m *faultMount) writeRole(t *testing.T, role string) []string {
	t.Helper()
	data := map[string]any{"default_ttl": faultDefaultTTL}
	secrets := []string{m.clientSecret}
	if m.grant == "refresh_token" {
		rt := obtainRefreshToken(t, m.clientID, m.clientSecret)
		data["grant_type"], data["refresh_token"] = "refresh_token", rt
		secrets = append(secrets, rt)
	} else {
		data["scopes"] = "read"
	}
	mustWrite(t, m.client, m.path+"/roles/"+role, data)
	return secrets
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

// checkRecovers: with the provider healthy again a new grant succeeds, which for the
// refresh_token grant proves the stored refresh token survived. A cached role whose provider
// asked for a Retry-After pause keeps being served from cache without a call to the provider.
func (m *faultMount) checkRecovers(t *testing.T, f e2eFault, creds string, cached bool, cachedToken string) {
	t.Helper()
	retryAfter := f.scenario == faultproxy.RetryAfterSeconds || f.scenario == faultproxy.RetryAfterDate
	requests := m.proxy.Stats().Requests
	s, code, msg := vaultRead(t, m.client, creds, forceGrant)
	if code != http.StatusOK || s == nil {
		t.Fatalf("with the provider healthy again the read fails: HTTP %d: %s", code, msg)
	}
	token := str(s.Data["access_token"])
	if cached && retryAfter {
		if token != cachedToken || !containsText(s.Warnings, "retry after") {
			t.Errorf("during the provider's Retry-After the cached token must be served with a warning; warnings %q", s.Warnings)
		}
		if n := m.proxy.Stats().Requests; n != requests {
			t.Errorf("the provider was called %d time(s) during its Retry-After pause", n-requests)
		}
		return
	}
	if token == cachedToken {
		t.Fatal("with the provider healthy again min_seconds did not obtain a new token")
	}
	if in := introspect(t, token); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Fatalf("the token after recovery is not active for the client: %v", in)
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
	b, err := os.ReadFile(filepath.Join(env.stateDir, "vault.pid"))
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
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && strings.HasPrefix(filepath.Base(exe), pluginCmd) {
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
