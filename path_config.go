package oauth

import (
	"context"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathConfig(b *backend) *framework.Path {
	fields := map[string]*framework.FieldSchema{
		"issuer":                   {Type: framework.TypeString, Description: "Issuer URL; its OIDC Discovery / RFC 8414 metadata supplies the endpoints. Set this or token_url."},
		"token_url":                {Type: framework.TypeString, Description: "Token endpoint URL. Overrides the discovered one."},
		"auth_url":                 {Type: framework.TypeString, Description: "Authorization endpoint URL. Overrides the discovered one."},
		"device_auth_url":          {Type: framework.TypeString, Description: "Device authorization endpoint URL (RFC 8628). Overrides the discovered one."},
		"revocation_url":           {Type: framework.TypeString, Description: "Token revocation endpoint URL (RFC 7009). Overrides the discovered one."},
		"redirect_uri":             {Type: framework.TypeString, Description: "Default redirect URI of authorization_code roles, as registered at the provider (e.g. https://vault.example.com/v1/oauth/callback)."},
		"ca_pem":                   {Type: framework.TypeString, Description: "PEM CA certificates to trust for the provider instead of the system roots."},
		"timeout":                  {Type: framework.TypeDurationSecond, Default: int(defaultTimeout.Seconds()), Description: "Time limit for one request to the provider, response body included."},
		"max_concurrent_refreshes": {Type: framework.TypeInt, Default: defaultMaxConcurrentRefreshes, Description: "How many token requests the background refresher may have open at once."},
		"lease":                    {Type: framework.TypeBool, Default: true, Description: "Default for roles: creds answers are non-renewable leases (true), or carry ttl and rotation_period instead, with no lease (false)."},
		"metrics_role_labels":      {Type: framework.TypeBool, Default: true, Description: "Label metrics with role names. Turn off for mounts with many thousand roles."},
	}
	addClientFields(fields, "Default for roles")
	addRefreshFields(fields)
	return &framework.Path{
		Pattern:      "config",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "oauth"},
		Fields:       fields,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   named(operation("Read the provider configuration (secrets show only whether they are set).", b.pathConfigRead, http.StatusOK, configReadFields), "read", "configuration"),
			logical.CreateOperation: named(forwarded(operation("Configure the provider.", b.pathConfigWrite, http.StatusNoContent, nil)), "configure", ""),
			logical.UpdateOperation: named(forwarded(operation("Configure the provider.", b.pathConfigWrite, http.StatusNoContent, nil)), "configure", ""),
			logical.DeleteOperation: named(forwarded(operation("Delete the provider configuration.", b.pathConfigDelete, http.StatusNoContent, nil)), "delete", "configuration"),
		},
		ExistenceCheck:  b.pathConfigExists,
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
	}
}

// named gives an operation of a path with several its own OpenAPI operation ID parts.
func named(op *framework.PathOperation, verb, suffix string) *framework.PathOperation {
	op.DisplayAttrs = &framework.DisplayAttributes{OperationVerb: verb, OperationSuffix: suffix}
	return op
}

// configReadFields is what a config read answers.
var configReadFields = map[string]*framework.FieldSchema{
	"issuer":                                {Type: framework.TypeString, Description: "Issuer URL."},
	"token_url":                             {Type: framework.TypeString, Description: "Token endpoint in use (given or discovered)."},
	"auth_url":                              {Type: framework.TypeString, Description: "Authorization endpoint in use."},
	"device_auth_url":                       {Type: framework.TypeString, Description: "Device authorization endpoint in use."},
	"revocation_url":                        {Type: framework.TypeString, Description: "Revocation endpoint in use."},
	"redirect_uri":                          {Type: framework.TypeString, Description: "Default redirect URI of authorization_code roles."},
	"ca_pem":                                {Type: framework.TypeString, Description: "CA certificates trusted for the provider."},
	"timeout":                               {Type: framework.TypeInt, Description: "Time limit for one request to the provider (seconds)."},
	"max_concurrent_refreshes":              {Type: framework.TypeInt, Description: "Bound on the refresher's simultaneous requests."},
	"lease":                                 {Type: framework.TypeBool, Description: "Roles' default: creds answers are leases."},
	"metrics_role_labels":                   {Type: framework.TypeBool, Description: "Whether metrics carry role names."},
	"token_endpoint_auth_methods_supported": {Type: framework.TypeStringSlice, Description: "Client authentication methods the provider's metadata lists."},
	"client_id":                             {Type: framework.TypeString, Description: "Default client ID for roles."},
	"client_secret_set":                     {Type: framework.TypeBool, Description: "Whether a default client secret is set."},
	"auth_method":                           {Type: framework.TypeString, Description: "Default client authentication method."},
	"client_key_set":                        {Type: framework.TypeBool, Description: "Whether a default private_key_jwt key is set."},
	"client_key_alg":                        {Type: framework.TypeString, Description: "JWS alg of the default key."},
	"client_key_kid":                        {Type: framework.TypeString, Description: "kid of the default key."},
	"refresh_buffer":                        {Type: framework.TypeInt, Description: "Default refresh buffer (seconds)."},
	"refresh_fraction":                      {Type: framework.TypeFloat, Description: "Default refresh fraction of a token's lifetime."},
}

func (b *backend) pathConfigExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := b.config(ctx, req.Storage)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.config(ctx, req.Storage)
	if err != nil || cfg == nil {
		return nil, err
	}
	data := map[string]any{
		"issuer":                   cfg.Issuer,
		"token_url":                cfg.tokenEndpoint(),
		"auth_url":                 cfg.authorizationEndpoint(),
		"device_auth_url":          cfg.deviceAuthorizationEndpoint(),
		"redirect_uri":             cfg.RedirectURI,
		"revocation_url":           cfg.revocationEndpoint(),
		"ca_pem":                   cfg.CAPEM,
		"timeout":                  int64(cfg.Timeout.Seconds()),
		"max_concurrent_refreshes": cfg.MaxConcurrentRefreshes,
		"lease":                    boolOr(cfg.Lease, true),
		"metrics_role_labels":      boolOr(cfg.MetricsRoleLabels, true),
	}
	cfg.clientCredentials.describe(data)
	cfg.refreshPolicy.describe(data)
	if md := cfg.Discovered; md != nil {
		data["token_endpoint_auth_methods_supported"] = md.TokenEndpointAuthMethodsSupported
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
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

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if err := req.Storage.Delete(ctx, configPath); err != nil {
		return nil, fmt.Errorf("deleting config: %w", err)
	}
	b.cache.config.drop("")
	return nil, nil
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
