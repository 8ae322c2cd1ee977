package oauth

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

const (
	defaultTimeout                = 30 * time.Second
	defaultMaxConcurrentRefreshes = 8
	defaultRefreshFraction        = 0.5
	maxConcurrentRefreshesLimit   = 1024
)

// configEntry is the provider, stored at "config".
type configEntry struct {
	entryFormat
	Issuer        string `json:"issuer,omitempty"`
	TokenURL      string `json:"token_url,omitempty"`
	AuthURL       string `json:"auth_url,omitempty"`
	DeviceAuthURL string `json:"device_auth_url,omitempty"`
	RevocationURL string `json:"revocation_url,omitempty"`
	// RedirectURI is the default redirect URI of authorization_code roles.
	RedirectURI string `json:"redirect_uri,omitempty"`
	// Discovered is the issuer's metadata, fetched when the config is written.
	Discovered *oauthclient.Metadata `json:"discovered,omitempty"`

	clientCredentials

	CAPEM                  string        `json:"ca_pem,omitempty"`
	Timeout                time.Duration `json:"timeout"`
	MaxConcurrentRefreshes int           `json:"max_concurrent_refreshes"`
	// Lease is the roles' default for creds leases; nil means true.
	Lease *bool `json:"lease,omitempty"`
	// MetricsRoleLabels puts each role's name on its metrics; nil means true. Off, a mount of
	// many thousand roles keeps its metrics few.
	MetricsRoleLabels *bool `json:"metrics_role_labels,omitempty"`
	refreshPolicy
}

// clientCredentials identify the client at the token endpoint; a role's override the config's.
type clientCredentials struct {
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	AuthMethod   string `json:"auth_method,omitempty"`
	ClientKey    string `json:"client_key,omitempty"`
	ClientKeyAlg string `json:"client_key_alg,omitempty"`
	ClientKeyKID string `json:"client_key_kid,omitempty"`
}

func (c *configEntry) tokenEndpoint() string {
	if c.TokenURL != "" || c.Discovered == nil {
		return c.TokenURL
	}
	return c.Discovered.TokenEndpoint
}

func (c *configEntry) revocationEndpoint() string {
	if c.RevocationURL != "" || c.Discovered == nil {
		return c.RevocationURL
	}
	return c.Discovered.RevocationEndpoint
}

func (c *configEntry) authorizationEndpoint() string {
	return firstNonEmpty(c.AuthURL, c.discovered().AuthorizationEndpoint)
}

func (c *configEntry) deviceAuthorizationEndpoint() string {
	return firstNonEmpty(c.DeviceAuthURL, c.discovered().DeviceAuthorizationEndpoint)
}

func (c *configEntry) discovered() oauthclient.Metadata {
	if c.Discovered == nil {
		return oauthclient.Metadata{}
	}
	return *c.Discovered
}

// update applies the fields present in the request.
func (c *configEntry) update(d *framework.FieldData) error {
	setString(d, "issuer", &c.Issuer)
	setString(d, "token_url", &c.TokenURL)
	setString(d, "auth_url", &c.AuthURL)
	setString(d, "device_auth_url", &c.DeviceAuthURL)
	setString(d, "revocation_url", &c.RevocationURL)
	setString(d, "redirect_uri", &c.RedirectURI)
	setString(d, "ca_pem", &c.CAPEM)
	setDuration(d, "timeout", &c.Timeout)
	setBool(d, "lease", &c.Lease)
	setBool(d, "metrics_role_labels", &c.MetricsRoleLabels)
	if v, ok := d.GetOk("max_concurrent_refreshes"); ok {
		c.MaxConcurrentRefreshes = v.(int)
	}
	c.clientCredentials.update(d)
	c.refreshPolicy.update(d)
	return nil
}

func (c *configEntry) validate() error {
	if c.Issuer == "" && c.TokenURL == "" {
		return fieldErrorf("issuer", "set issuer (for discovery) or token_url")
	}
	for field, u := range map[string]string{"issuer": c.Issuer, "token_url": c.TokenURL, "auth_url": c.AuthURL, "device_auth_url": c.DeviceAuthURL, "revocation_url": c.RevocationURL, "redirect_uri": c.RedirectURI} {
		if err := validateEndpointURL(field, u); err != nil {
			return err
		}
	}
	if c.CAPEM != "" {
		if err := validateLength("ca_pem", c.CAPEM, maxPEMBytes); err != nil {
			return err
		}
		if _, err := oauthclient.ParseCAPEM(c.CAPEM); err != nil {
			return fieldErrorf("ca_pem", "holds no PEM certificate")
		}
	}
	if c.Timeout <= 0 || c.Timeout > maxTimeout {
		return fieldErrorf("timeout", "must be more than 0 and at most %s", maxTimeout)
	}
	if c.MaxConcurrentRefreshes < 1 || c.MaxConcurrentRefreshes > maxConcurrentRefreshesLimit {
		return fieldErrorf("max_concurrent_refreshes", "must be between 1 and %d", maxConcurrentRefreshesLimit)
	}
	if err := c.clientCredentials.validate(); err != nil {
		return err
	}
	return c.refreshPolicy.validate()
}

// discover fetches the issuer's metadata into cfg; failures blame the issuer field.
func (b *backend) discover(ctx context.Context, cfg *configEntry) error {
	client, err := b.client(cfg)
	if err != nil {
		return fieldErrorf("ca_pem", "%v", err)
	}
	md, err := client.Discover(ctx, cfg.Issuer)
	if err != nil {
		return fieldErrorf("issuer", "%v", err)
	}
	for field, u := range map[string]string{"token_endpoint": md.TokenEndpoint, "revocation_endpoint": md.RevocationEndpoint,
		"authorization_endpoint": md.AuthorizationEndpoint, "device_authorization_endpoint": md.DeviceAuthorizationEndpoint} {
		if err := validateEndpointURL(field, u); err != nil {
			return fieldErrorf("issuer", "discovered %v", err)
		}
	}
	cfg.Discovered = md
	return nil
}

// client returns the HTTP client for cfg's trust roots and timeout, built once for each.
func (b *backend) client(cfg *configEntry) (*oauthclient.Client, error) {
	if c := b.cache.client.Load(); c != nil && c.caPEM == cfg.CAPEM && c.timeout == cfg.Timeout {
		return c.client, nil
	}
	c, err := b.newClient(cfg.CAPEM, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	b.cache.client.Store(&providerClient{caPEM: cfg.CAPEM, timeout: cfg.Timeout, client: c})
	return c, nil
}
