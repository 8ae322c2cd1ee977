package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Metadata is the part of an authorization server's metadata (RFC 8414, OIDC Discovery 1.0) that
// the broker uses.
type Metadata struct {
	Issuer                            string   `json:"issuer"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	DeviceAuthorizationEndpoint       string   `json:"device_authorization_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	IntrospectionEndpoint             string   `json:"introspection_endpoint"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	ResponseModesSupported            []string `json:"response_modes_supported"`
	// AuthorizationResponseIssParameterSupported promises an iss in every authorization
	// response (RFC 9207 §3).
	AuthorizationResponseIssParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
	// MTLSEndpointAliases are the endpoints to use with mutual TLS (RFC 8705 §5).
	MTLSEndpointAliases map[string]string `json:"mtls_endpoint_aliases,omitempty"`
}

// Discover fetches the issuer's metadata: OIDC Discovery first, then RFC 8414's well-known URI.
// The document must name the same issuer (OIDC Discovery §4.3, RFC 8414 §3.3).
func (c *Client) Discover(ctx context.Context, issuer string) (*Metadata, error) {
	var lastErr error
	for _, u := range wellKnownURLs(issuer) {
		md, err := c.fetchMetadata(ctx, u)
		if err != nil {
			lastErr = err
			continue
		}
		if strings.TrimSuffix(md.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
			return nil, fmt.Errorf("discovery document names issuer %q, not %q", md.Issuer, issuer)
		}
		if md.TokenEndpoint == "" {
			return nil, fmt.Errorf("discovery document at %s has no token_endpoint", u)
		}
		return md, nil
	}
	return nil, lastErr
}

func wellKnownURLs(issuer string) []string {
	trimmed := strings.TrimSuffix(issuer, "/")
	urls := []string{trimmed + "/.well-known/openid-configuration"}
	if u, err := url.Parse(trimmed); err == nil {
		// RFC 8414 §3.1 inserts the well-known segment before the issuer's path.
		urls = append(urls, fmt.Sprintf("%s://%s/.well-known/oauth-authorization-server%s", u.Scheme, u.Host, u.Path))
	}
	return urls
}

func (c *Client) fetchMetadata(ctx context.Context, u string) (*Metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			_, cause := transportCause(ue, u)
			return nil, fmt.Errorf("discovery: %s", cause)
		}
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discovery: %s answered HTTP %d", u, resp.StatusCode)
	}
	var md Metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBytes)).Decode(&md); err != nil {
		return nil, fmt.Errorf("discovery: %s is not a JSON metadata document", u)
	}
	return &md, nil
}
