package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// provider speaks to the test provider (test/provider): dynamic client registration and the
// loopback-only /test/ endpoints. Every provider figure in the report comes from its counters,
// never from the plugin's own account.
type provider struct {
	issuer       string
	registration string
	http         *http.Client
}

// providerStats is GET /test/stats.
type providerStats struct {
	TokenRequests int64            `json:"token_requests"`
	InFlight      int64            `json:"in_flight"`
	PeakInFlight  int64            `json:"peak_in_flight"`
	ByClient      map[string]int64 `json:"by_client"`
}

func newProvider(ctx context.Context, issuer string) (*provider, error) {
	p := &provider{issuer: strings.TrimSuffix(issuer, "/"), http: &http.Client{Timeout: 30 * time.Second}}
	var md struct {
		RegistrationEndpoint string `json:"registration_endpoint"`
	}
	if err := p.do(ctx, http.MethodGet, p.issuer+"/.well-known/openid-configuration", nil, &md); err != nil {
		return nil, fmt.Errorf("provider discovery: %w", err)
	}
	if md.RegistrationEndpoint == "" {
		return nil, fmt.Errorf("provider discovery: no registration_endpoint")
	}
	p.registration = md.RegistrationEndpoint
	return p, nil
}

// register creates a confidential client_credentials client whose access tokens last ttl.
func (p *provider) register(ctx context.Context, ttl time.Duration) (id, secret string, err error) {
	return p.registerWith(ctx, map[string]any{"access_token_ttl": int(ttl.Seconds())})
}

// registerWith creates a confidential client_credentials client with scope read, the metadata
// given replacing the defaults.
func (p *provider) registerWith(ctx context.Context, metadata map[string]any) (id, secret string, err error) {
	req := map[string]any{
		"grant_types":                []string{"client_credentials"},
		"token_endpoint_auth_method": "client_secret_basic",
		"scope":                      "read",
		"response_types":             []string{},
		"redirect_uris":              []string{},
	}
	for k, v := range metadata {
		req[k] = v
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := p.do(ctx, http.MethodPost, p.registration, req, &out); err != nil {
		return "", "", fmt.Errorf("client registration: %w", err)
	}
	return out.ClientID, out.ClientSecret, nil
}

func (p *provider) stats(ctx context.Context) (providerStats, error) {
	var s providerStats
	err := p.do(ctx, http.MethodGet, p.issuer+"/test/stats", nil, &s)
	return s, err
}

func (p *provider) resetStats(ctx context.Context) error {
	return p.do(ctx, http.MethodPost, p.issuer+"/test/stats/reset", nil, nil)
}

// setDelay makes the provider hold every token request for d, as a remote identity provider
// would; without a delay it answers each request in one go and concurrency cannot show.
func (p *provider) setDelay(ctx context.Context, d time.Duration) error {
	return p.do(ctx, http.MethodPost, p.issuer+"/test/config", map[string]any{"token_delay_ms": d.Milliseconds()}, nil)
}

func (p *provider) do(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		buf, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}
