//go:build e2e

package e2eharness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// HTTPClient is the client the suites talk to the provider (and to Vault outside its API
// client) with.
var HTTPClient = &http.Client{Timeout: 30 * time.Second}

// Discovery is the provider's metadata (the part the suites use).
type Discovery struct {
	Issuer                string `json:"issuer"`
	TokenEndpoint         string `json:"token_endpoint"`
	RegistrationEndpoint  string `json:"registration_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`
	JWKSURI               string `json:"jwks_uri"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	DeviceEndpoint        string `json:"device_authorization_endpoint"`
}

// FetchDiscovery reads the issuer's discovery document (OpenID Connect's, else RFC 8414's),
// retrying for up to 30 s while the provider starts.
func FetchDiscovery(issuer string) (Discovery, error) {
	var d Discovery
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, wk := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
			resp, err := http.Get(issuer + wk)
			if err != nil {
				lastErr = err
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				lastErr = fmt.Errorf("GET %s: %s: %s", wk, resp.Status, body)
				continue
			}
			if err := json.Unmarshal(body, &d); err != nil {
				return d, fmt.Errorf("GET %s: %w", wk, err)
			}
			if d.TokenEndpoint == "" || d.RegistrationEndpoint == "" || d.IntrospectionEndpoint == "" {
				return d, fmt.Errorf("GET %s: token, registration or introspection endpoint missing: %s", wk, body)
			}
			return d, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return d, lastErr
}

// RegisterClient registers a client at the provider (RFC 7591, open registration). The metadata
// overrides the defaults: a confidential client_credentials client with scopes "read write".
func (s *Suite) RegisterClient(t testing.TB, metadata map[string]any) (id, secret string) {
	t.Helper()
	md := map[string]any{
		"grant_types":                []string{"client_credentials"},
		"token_endpoint_auth_method": "client_secret_basic",
		"scope":                      "read write",
		"response_types":             []string{},
		"redirect_uris":              []string{},
	}
	for k, v := range metadata {
		md[k] = v
	}
	body, err := json.Marshal(md)
	Must(t, err)
	resp, err := HTTPClient.Post(s.Discovery.RegistrationEndpoint, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("client registration: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("client registration: %s: %s", resp.Status, raw)
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.ClientID == "" {
		t.Fatalf("client registration: bad answer %s (%v)", raw, err)
	}
	return out.ClientID, out.ClientSecret
}

// PasswordTokens is the provider's answer to a password grant.
type PasswordTokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// PasswordGrant signs alice in with the password grant for scope, directly at the provider as an
// operator or a front end would.
func (s *Suite) PasswordGrant(t testing.TB, id, secret, scope string) PasswordTokens {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-password"}, "scope": {scope}}
	req, err := http.NewRequest(http.MethodPost, s.Discovery.TokenEndpoint, strings.NewReader(form.Encode()))
	Must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := HTTPClient.Do(req)
	Must(t, err)
	defer resp.Body.Close()
	var out PasswordTokens
	Must(t, json.NewDecoder(resp.Body).Decode(&out))
	if out.AccessToken == "" {
		t.Fatalf("password grant at the provider returned no access token (HTTP %d)", resp.StatusCode)
	}
	return out
}

// ObtainRefreshToken is the refresh token of PasswordGrant for scope.
func (s *Suite) ObtainRefreshToken(t testing.TB, id, secret, scope string) string {
	t.Helper()
	rt := s.PasswordGrant(t, id, secret, scope).RefreshToken
	if rt == "" {
		t.Fatalf("password grant at the provider returned no refresh token for scope %q", scope)
	}
	return rt
}

// Stats is the provider's GET /test/stats answer.
type Stats struct {
	TokenRequests int            `json:"token_requests"`
	ByGrant       map[string]int `json:"by_grant"`
	ByClient      map[string]int `json:"by_client"`
	InFlight      int            `json:"in_flight"`
	PeakInFlight  int            `json:"peak_in_flight"`
	LastParams    map[string]any `json:"last_params"`
}

// ProviderStats reads the provider's counters.
func (s *Suite) ProviderStats(t testing.TB) Stats {
	t.Helper()
	resp, err := HTTPClient.Get(s.ProviderURL + "/test/stats")
	if err != nil {
		t.Fatalf("provider stats: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("provider stats: %s: %s", resp.Status, raw)
	}
	var st Stats
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("provider stats: %v: %s", err, raw)
	}
	return st
}

// ResetStats sets the provider's counters to zero.
func (s *Suite) ResetStats(t testing.TB) {
	t.Helper()
	s.postTestControl(t, "provider stats reset", "/test/stats/reset", "")
}

// SetTokenDelay makes the provider hold every token request for ms milliseconds.
func (s *Suite) SetTokenDelay(t testing.TB, ms int) {
	t.Helper()
	s.postTestControl(t, "provider config", "/test/config", fmt.Sprintf(`{"token_delay_ms": %d}`, ms))
}

// postTestControl posts a JSON body (none when empty) to one of the provider's /test endpoints.
func (s *Suite) postTestControl(t testing.TB, what, path, body string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	resp, err := HTTPClient.Post(s.ProviderURL+path, "application/json", r)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s: %s", what, resp.Status, raw)
	}
}

// RefreshTokens is the provider's GET /test/refresh_tokens answer for one client: its live
// refresh tokens not yet used, and those spent by rotation.
type RefreshTokens struct {
	Active   int `json:"active"`
	Consumed int `json:"consumed"`
}

// RefreshTokenCounts counts a client's refresh tokens at the provider.
func (s *Suite) RefreshTokenCounts(t testing.TB, clientID string) RefreshTokens {
	t.Helper()
	var out RefreshTokens
	s.getTestJSON(t, "/test/refresh_tokens?client_id="+url.QueryEscape(clientID), &out)
	return out
}

// IssuedSecrets is the provider's GET /test/secrets answer for one client: every credential it
// issued to the client and every PKCE verifier it received from it.
type IssuedSecrets struct {
	AccessTokens       []string `json:"access_token"`
	RefreshTokens      []string `json:"refresh_token"`
	AuthorizationCodes []string `json:"authorization_code"`
	DeviceCodes        []string `json:"device_code"`
	CodeVerifiers      []string `json:"code_verifier"`
}

// ProviderSecrets reads what the provider issued to a client (for the leak scan).
func (s *Suite) ProviderSecrets(t testing.TB, clientID string) IssuedSecrets {
	t.Helper()
	var out IssuedSecrets
	s.getTestJSON(t, "/test/secrets?client_id="+url.QueryEscape(clientID), &out)
	return out
}

// getTestJSON reads one of the provider's /test endpoints into out.
func (s *Suite) getTestJSON(t testing.TB, path string, out any) {
	t.Helper()
	resp, err := HTTPClient.Get(s.ProviderURL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, raw)
	}
}
