package oauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

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
	Issuer        string `json:"issuer,omitempty"`
	TokenURL      string `json:"token_url,omitempty"`
	AuthURL       string `json:"auth_url,omitempty"`
	DeviceAuthURL string `json:"device_auth_url,omitempty"`
	RevocationURL string `json:"revocation_url,omitempty"`
	// Discovered is the issuer's metadata, fetched when the config is written.
	Discovered *oauthclient.Metadata `json:"discovered,omitempty"`

	clientCredentials

	CAPEM                  string        `json:"ca_pem,omitempty"`
	Timeout                time.Duration `json:"timeout"`
	MaxConcurrentRefreshes int           `json:"max_concurrent_refreshes"`
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

// refreshPolicy says how early a token is replaced: when the time it has left falls below
// max(RefreshBuffer, RefreshFraction × lifetime).
type refreshPolicy struct {
	RefreshBuffer   time.Duration `json:"refresh_buffer"`
	RefreshFraction float64       `json:"refresh_fraction"`
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

func pathConfig(b *backend) *framework.Path {
	fields := map[string]*framework.FieldSchema{
		"issuer":                   {Type: framework.TypeString, Description: "Issuer URL; its OIDC Discovery / RFC 8414 metadata supplies the endpoints. Set this or token_url."},
		"token_url":                {Type: framework.TypeString, Description: "Token endpoint URL. Overrides the discovered one."},
		"auth_url":                 {Type: framework.TypeString, Description: "Authorization endpoint URL. Overrides the discovered one."},
		"device_auth_url":          {Type: framework.TypeString, Description: "Device authorization endpoint URL (RFC 8628). Overrides the discovered one."},
		"revocation_url":           {Type: framework.TypeString, Description: "Token revocation endpoint URL (RFC 7009). Overrides the discovered one."},
		"ca_pem":                   {Type: framework.TypeString, Description: "PEM CA certificates to trust for the provider instead of the system roots."},
		"timeout":                  {Type: framework.TypeDurationSecond, Default: int(defaultTimeout.Seconds()), Description: "Time limit for one request to the provider, response body included."},
		"max_concurrent_refreshes": {Type: framework.TypeInt, Default: defaultMaxConcurrentRefreshes, Description: "How many token requests the background refresher may have open at once."},
	}
	addClientFields(fields, "Default for roles")
	addRefreshFields(fields)
	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
		},
		Fields: fields,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "configuration"},
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "configure"},
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathConfigDelete,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "delete", OperationSuffix: "configuration"},
			},
		},
		ExistenceCheck:  b.pathConfigExists,
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
	}
}

// addClientFields adds the client identity and authentication fields shared by config and roles.
func addClientFields(fields map[string]*framework.FieldSchema, scope string) {
	fields["client_id"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": OAuth client ID."}
	fields["client_secret"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": OAuth client secret. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}}
	fields["auth_method"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": client authentication at the token endpoint: client_secret_basic, client_secret_post, client_secret_jwt, private_key_jwt or none. Chosen from the provider's metadata when unset."}
	fields["client_key"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": PEM private key (RSA or EC) for private_key_jwt. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}}
	fields["client_key_alg"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": JWS alg for private_key_jwt; defaults from the key (RS256, ES256)."}
	fields["client_key_kid"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": JWS kid header for private_key_jwt."}
}

func addRefreshFields(fields map[string]*framework.FieldSchema) {
	fields["refresh_buffer"] = &framework.FieldSchema{Type: framework.TypeDurationSecond, Description: "Refresh a token once it has less than this left (or less than refresh_fraction of its lifetime, whichever is more)."}
	fields["refresh_fraction"] = &framework.FieldSchema{Type: framework.TypeFloat, Description: "Refresh a token once less than this fraction of its lifetime is left (0 to 0.9, default 0.5)."}
}

func (b *backend) pathConfigExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := b.config(ctx, req.Storage)
	return cfg != nil, err
}

// config returns the stored provider configuration, or nil when none is written.
func (b *backend) config(ctx context.Context, s logical.Storage) (*configEntry, error) {
	return b.cache.config.load(ctx, s, "")
}

// client returns the HTTP client for cfg's trust roots and timeout, built once for each.
func (b *backend) client(cfg *configEntry) (*oauthclient.Client, error) {
	if c := b.cache.client.Load(); c != nil && c.caPEM == cfg.CAPEM && c.timeout == cfg.Timeout {
		return c.client, nil
	}
	c, err := oauthclient.NewClient(cfg.CAPEM, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	b.cache.client.Store(&providerClient{caPEM: cfg.CAPEM, timeout: cfg.Timeout, client: c})
	return c, nil
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.config(ctx, req.Storage)
	if err != nil || cfg == nil {
		return nil, err
	}
	data := map[string]any{
		"issuer":                   cfg.Issuer,
		"token_url":                cfg.tokenEndpoint(),
		"auth_url":                 firstNonEmpty(cfg.AuthURL, cfg.discovered().AuthorizationEndpoint),
		"device_auth_url":          firstNonEmpty(cfg.DeviceAuthURL, cfg.discovered().DeviceAuthorizationEndpoint),
		"revocation_url":           cfg.revocationEndpoint(),
		"ca_pem":                   cfg.CAPEM,
		"timeout":                  int64(cfg.Timeout.Seconds()),
		"max_concurrent_refreshes": cfg.MaxConcurrentRefreshes,
	}
	cfg.clientCredentials.describe(data)
	cfg.refreshPolicy.describe(data)
	if md := cfg.Discovered; md != nil {
		data["token_endpoint_auth_methods_supported"] = md.TokenEndpointAuthMethodsSupported
	}
	return &logical.Response{Data: data}, nil
}

func (c *configEntry) discovered() oauthclient.Metadata {
	if c.Discovered == nil {
		return oauthclient.Metadata{}
	}
	return *c.Discovered
}

func (c clientCredentials) describe(data map[string]any) {
	data["client_id"] = c.ClientID
	data["client_secret_set"] = c.ClientSecret != ""
	data["auth_method"] = c.AuthMethod
	data["client_key_set"] = c.ClientKey != ""
	data["client_key_alg"] = c.ClientKeyAlg
	data["client_key_kid"] = c.ClientKeyKID
}

func (p refreshPolicy) describe(data map[string]any) {
	data["refresh_buffer"] = int64(p.RefreshBuffer.Seconds())
	data["refresh_fraction"] = p.RefreshFraction
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := rejectUnknownFields(req, d); err != nil {
		return errorResponse(err)
	}
	old, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := &configEntry{
		Timeout:                defaultTimeout,
		MaxConcurrentRefreshes: defaultMaxConcurrentRefreshes,
		refreshPolicy:          refreshPolicy{RefreshFraction: defaultRefreshFraction},
	}
	if old != nil {
		copied := *old
		cfg = &copied
	}
	if err := cfg.update(d); err != nil {
		return errorResponse(err)
	}
	if err := cfg.validate(); err != nil {
		return errorResponse(err)
	}
	var warnings []string
	if cfg.Issuer != "" && (old == nil || old.Issuer != cfg.Issuer || old.CAPEM != cfg.CAPEM || cfg.Discovered == nil) {
		if err := b.discover(ctx, cfg); err != nil {
			return errorResponse(err)
		}
	}
	if cfg.Issuer == "" {
		cfg.Discovered = nil
	}
	if cfg.AuthMethod == "" && cfg.Discovered != nil && len(cfg.Discovered.TokenEndpointAuthMethodsSupported) > 0 {
		if _, err := chooseAuthMethod(cfg.clientCredentials, cfg); err != nil {
			warnings = append(warnings, err.Error())
		}
	}
	if err := putJSON(ctx, req.Storage, configPath, cfg); err != nil {
		return nil, err
	}
	b.cache.config.set("", cfg)
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

// update applies the fields present in the request.
func (c *configEntry) update(d *framework.FieldData) error {
	setString(d, "issuer", &c.Issuer)
	setString(d, "token_url", &c.TokenURL)
	setString(d, "auth_url", &c.AuthURL)
	setString(d, "device_auth_url", &c.DeviceAuthURL)
	setString(d, "revocation_url", &c.RevocationURL)
	setString(d, "ca_pem", &c.CAPEM)
	setDuration(d, "timeout", &c.Timeout)
	if v, ok := d.GetOk("max_concurrent_refreshes"); ok {
		c.MaxConcurrentRefreshes = v.(int)
	}
	c.clientCredentials.update(d)
	c.refreshPolicy.update(d)
	return nil
}

func (c *clientCredentials) update(d *framework.FieldData) {
	setString(d, "client_id", &c.ClientID)
	setString(d, "client_secret", &c.ClientSecret)
	setString(d, "auth_method", &c.AuthMethod)
	setString(d, "client_key", &c.ClientKey)
	setString(d, "client_key_alg", &c.ClientKeyAlg)
	setString(d, "client_key_kid", &c.ClientKeyKID)
}

func (p *refreshPolicy) update(d *framework.FieldData) {
	setDuration(d, "refresh_buffer", &p.RefreshBuffer)
	if v, ok := d.GetOk("refresh_fraction"); ok {
		p.RefreshFraction = v.(float64)
	}
}

func (c *configEntry) validate() error {
	if c.Issuer == "" && c.TokenURL == "" {
		return fieldErrorf("issuer", "set issuer (for discovery) or token_url")
	}
	for field, u := range map[string]string{"issuer": c.Issuer, "token_url": c.TokenURL, "auth_url": c.AuthURL, "device_auth_url": c.DeviceAuthURL, "revocation_url": c.RevocationURL} {
		if err := validateEndpointURL(field, u); err != nil {
			return err
		}
	}
	if c.CAPEM != "" {
		if err := validateLength("ca_pem", c.CAPEM, maxPEMBytes); err != nil {
			return err
		}
		if _, err := oauthclient.NewClient(c.CAPEM, c.Timeout); err != nil {
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

func (c clientCredentials) validate() error {
	for field, v := range map[string]string{"client_id": c.ClientID, "client_secret": c.ClientSecret, "client_key_alg": c.ClientKeyAlg, "client_key_kid": c.ClientKeyKID} {
		if err := validateLength(field, v, maxFieldBytes); err != nil {
			return err
		}
	}
	if c.AuthMethod != "" {
		if err := validateChoice("auth_method", c.AuthMethod, oauthclient.AuthMethods); err != nil {
			return err
		}
	}
	if c.ClientKey != "" || c.ClientKeyAlg != "" {
		if _, err := c.signingKey(); err != nil {
			return err
		}
	}
	return nil
}

// signingKey parses the private_key_jwt key; its errors name client_key or client_key_alg.
func (c clientCredentials) signingKey() (*oauthclient.SigningKey, error) {
	if c.ClientKey == "" {
		return nil, fieldErrorf("client_key", "private_key_jwt needs a PEM private key")
	}
	if err := validateLength("client_key", c.ClientKey, maxPEMBytes); err != nil {
		return nil, err
	}
	return parseKeyField("client_key", "client_key_alg", c.ClientKey, c.ClientKeyAlg, c.ClientKeyKID, true)
}

// parseKeyField parses a key, blaming field for an unreadable key and algField for an algorithm
// that does not fit it.
func parseKeyField(field, algField, keyText, alg, kid string, pemOnly bool) (*oauthclient.SigningKey, error) {
	if pemOnly && !oauthclient.IsPEM(keyText) {
		return nil, fieldErrorf(field, "must be a PEM private key (RSA or EC)")
	}
	key, err := oauthclient.ParseSigningKey(keyText, alg, kid)
	if err == nil {
		return key, nil
	}
	var keyErr *oauthclient.KeyError
	if errors.As(err, &keyErr) {
		return nil, fieldErrorf(field, "%s", keyErr.Msg)
	}
	return nil, fieldErrorf(algField, "%v", err)
}

func (p refreshPolicy) validate() error {
	if err := validateDuration("refresh_buffer", p.RefreshBuffer, maxDuration); err != nil {
		return err
	}
	if p.RefreshFraction < 0 || p.RefreshFraction > 0.9 {
		return fieldErrorf("refresh_fraction", "must be between 0 and 0.9")
	}
	return nil
}

// discover fetches the issuer's metadata into cfg; failures blame the issuer field.
func (b *backend) discover(ctx context.Context, cfg *configEntry) error {
	client, err := oauthclient.NewClient(cfg.CAPEM, cfg.Timeout)
	if err != nil {
		return fieldErrorf("ca_pem", "%v", err)
	}
	md, err := client.Discover(ctx, cfg.Issuer)
	if err != nil {
		return fieldErrorf("issuer", "%v", err)
	}
	for field, u := range map[string]string{"token_endpoint": md.TokenEndpoint, "revocation_endpoint": md.RevocationEndpoint} {
		if err := validateEndpointURL(field, u); err != nil {
			return fieldErrorf("issuer", "discovered %v", err)
		}
	}
	cfg.Discovered = md
	return nil
}

// chooseAuthMethod picks the client authentication for a request: the explicit choice, else the
// first method the provider supports that the credentials at hand can perform.
func chooseAuthMethod(creds clientCredentials, cfg *configEntry) (string, error) {
	if creds.AuthMethod != "" {
		return creds.AuthMethod, nil
	}
	var supported []string
	if cfg.Discovered != nil {
		supported = cfg.Discovered.TokenEndpointAuthMethodsSupported
	}
	if len(supported) == 0 {
		// RFC 8414 §2: the default is client_secret_basic.
		supported = []string{oauthclient.AuthClientSecretBasic}
		if creds.ClientSecret == "" {
			supported = append(supported, oauthclient.AuthPrivateKeyJWT, oauthclient.AuthNone)
		}
	}
	for _, m := range oauthclient.AuthMethods {
		if slices.Contains(supported, m) && creds.canUse(m) {
			return m, nil
		}
	}
	return "", fieldErrorf("auth_method", "none of the provider's token_endpoint_auth_methods_supported (%v) fits the credentials given; set auth_method and its credentials", supported)
}

func (c clientCredentials) canUse(method string) bool {
	switch method {
	case oauthclient.AuthClientSecretBasic, oauthclient.AuthClientSecretPost, oauthclient.AuthClientSecretJWT:
		return c.ClientSecret != ""
	case oauthclient.AuthPrivateKeyJWT:
		return c.ClientKey != ""
	}
	return c.ClientSecret == "" && c.ClientKey == ""
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if err := req.Storage.Delete(ctx, configPath); err != nil {
		return nil, fmt.Errorf("deleting config: %w", err)
	}
	b.cache.config.drop("")
	return nil, nil
}

func setString(d *framework.FieldData, field string, dst *string) {
	if v, ok := d.GetOk(field); ok {
		*dst = v.(string)
	}
}

func setDuration(d *framework.FieldData, field string, dst *time.Duration) {
	if v, ok := d.GetOk(field); ok {
		*dst = time.Duration(v.(int)) * time.Second
	}
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

const pathConfigHelpSyn = `Configure the OAuth 2.0 provider that issues tokens.`

const pathConfigHelpDesc = `
Sets the identity provider for every role of this mount. Give "issuer" to discover the endpoints
with OpenID Connect Discovery (or RFC 8414 metadata), or "token_url" directly; endpoints given
explicitly override discovered ones. URLs must use https unless the host is a loopback address.

client_id, client_secret, auth_method and the client_key fields are defaults for roles that do
not set their own. Secrets (client_secret, client_key) are write-only: a read shows only whether
they are set. "ca_pem" replaces the system trust roots for requests to the provider, and
"timeout" bounds each request, response body included.
`
