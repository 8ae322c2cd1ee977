package oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Grant types a role can perform (short names; oauthclient.GrantTypeURI maps them to the wire).
const (
	grantClientCredentials = "client_credentials"
	grantPassword          = "password"
	grantRefreshToken      = "refresh_token"
	grantJWTBearer         = "jwt_bearer"
)

var supportedGrants = []string{grantClientCredentials, grantPassword, grantRefreshToken, grantJWTBearer}

const (
	defaultTokenTTL     = time.Hour
	defaultAssertionTTL = 5 * time.Minute
)

// reservedTokenParams are set by the plugin itself; token_params may not override them.
var reservedTokenParams = []string{"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope", "username", "password", "refresh_token", "assertion"}

// reservedClaims are set on every assertion; assertion_claims may not override them.
var reservedClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti"}

// roleEntry is one application's grant, stored at "roles/<name>".
type roleEntry struct {
	// Incarnation is random per creation: a role deleted and created again under its name
	// never inherits a token of its previous life.
	Incarnation string `json:"incarnation,omitempty"`
	GrantType   string `json:"grant_type"`
	clientCredentials

	Scopes      []string          `json:"scopes,omitempty"`
	Audience    string            `json:"audience,omitempty"`
	Resource    []string          `json:"resource,omitempty"`
	TokenParams map[string]string `json:"token_params,omitempty"`
	// SecretTokenParams are token_params whose values are secrets: write-only.
	SecretTokenParams map[string]string `json:"secret_token_params,omitempty"`

	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	assertionSettings

	DefaultTTL time.Duration `json:"default_ttl"`
	MaxTTL     time.Duration `json:"max_ttl"`
	refreshPolicy
	// RefreshOverrides names the refresh settings the role sets itself, even to 0; the others
	// come from the config. (Roles stored before it override with every non-zero setting.)
	RefreshOverrides []string `json:"refresh_overrides,omitempty"`
}

// assertionSettings build the RFC 7523 assertion of the jwt_bearer grant.
type assertionSettings struct {
	AssertionKey      string         `json:"assertion_key,omitempty"`
	AssertionAlg      string         `json:"assertion_alg,omitempty"`
	AssertionKID      string         `json:"assertion_kid,omitempty"`
	AssertionIssuer   string         `json:"assertion_issuer,omitempty"`
	AssertionSubject  string         `json:"assertion_subject,omitempty"`
	AssertionAudience string         `json:"assertion_audience,omitempty"`
	AssertionTTL      time.Duration  `json:"assertion_ttl"`
	AssertionClaims   map[string]any `json:"assertion_claims,omitempty"`
}

func pathRoles(b *backend) []*framework.Path {
	fields := map[string]*framework.FieldSchema{
		"name":                {Type: framework.TypeString, Required: true, Description: "Name of the role."},
		"grant_type":          {Type: framework.TypeString, Default: grantClientCredentials, Description: "Grant to perform: " + strings.Join(supportedGrants, ", ") + "."},
		"scopes":              {Type: framework.TypeCommaStringSlice, Description: "Scopes to request, comma-separated; sent space-separated as scope."},
		"audience":            {Type: framework.TypeString, Description: "Value of the audience parameter sent to the token endpoint."},
		"resource":            {Type: framework.TypeCommaStringSlice, Description: "RFC 8707 resource indicators to send, comma-separated."},
		"token_params":        {Type: framework.TypeKVPairs, Description: "Extra token request parameters as key=value pairs."},
		"secret_token_params": {Type: framework.TypeKVPairs, Description: "Extra token request parameters whose values are secret (an API key, say), as key=value pairs. Write-only: a read shows only their names.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"username":            {Type: framework.TypeString, Description: "password grant: the resource owner's username."},
		"password":            {Type: framework.TypeString, Description: "password grant: the resource owner's password. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"refresh_token":       {Type: framework.TypeString, Description: "refresh_token grant: the refresh token to import. Replaced by each rotation. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"assertion_key":       {Type: framework.TypeString, Description: "jwt_bearer grant: PEM private key (RSA, EC) or HMAC shared secret that signs the assertion. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"assertion_alg":       {Type: framework.TypeString, Description: "jwt_bearer grant: JWS alg; defaults from the key (RS256, ES256, HS256)."},
		"assertion_kid":       {Type: framework.TypeString, Description: "jwt_bearer grant: JWS kid header."},
		"assertion_issuer":    {Type: framework.TypeString, Description: "jwt_bearer grant: iss claim; defaults to the client ID."},
		"assertion_subject":   {Type: framework.TypeString, Description: "jwt_bearer grant: sub claim; defaults to the client ID."},
		"assertion_audience":  {Type: framework.TypeString, Description: "jwt_bearer grant: aud claim; defaults to the token endpoint URL."},
		"assertion_ttl":       {Type: framework.TypeDurationSecond, Description: "jwt_bearer grant: assertion lifetime (default 5m)."},
		"assertion_claims":    {Type: framework.TypeString, Description: "jwt_bearer grant: extra claims, as a JSON object."},
		"default_ttl":         {Type: framework.TypeDurationSecond, Description: "Lifetime assumed for tokens whose response has no expires_in (default 1h)."},
		"max_ttl":             {Type: framework.TypeDurationSecond, Description: "Upper bound on a creds lease, whatever the token's lifetime (0: no bound)."},
	}
	addClientFields(fields, "Overrides the config's")
	addRefreshFields(fields)

	return []*framework.Path{
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "oauth",
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathRolesList},
			},
			HelpSynopsis:    pathRolesListHelpSyn,
			HelpDescription: pathRolesListHelpDesc,
		},
		{
			// Any name matches so that a bad one gets a 400 that says why, not "unsupported path".
			Pattern: "roles/" + namePattern + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "oauth",
				OperationSuffix: "role",
			},
			Fields: fields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathRoleRead},
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathRoleWrite, ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRoleWrite, ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathRoleDelete, ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true},
			},
			ExistenceCheck:  b.pathRoleExists,
			HelpSynopsis:    pathRoleHelpSyn,
			HelpDescription: pathRoleHelpDesc,
		},
	}
}

func (b *backend) pathRoleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateRoleName(name) != nil {
		return false, nil
	}
	role, err := b.role(ctx, req.Storage, name)
	return role != nil, err
}

// role returns the named role, or nil when there is none.
func (b *backend) role(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	return b.cache.roles.load(ctx, s, name)
}

func (b *backend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, rolePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateRoleName(name); err != nil {
		return errorResponse(err)
	}
	role, err := b.role(ctx, req.Storage, name)
	if err != nil || role == nil {
		return nil, err
	}
	data := map[string]any{
		"grant_type":               role.GrantType,
		"scopes":                   role.Scopes,
		"audience":                 role.Audience,
		"resource":                 role.Resource,
		"token_params":             role.TokenParams,
		"secret_token_param_names": sortedKeys(role.SecretTokenParams),
		"username":                 role.Username,
		"password_set":             role.Password != "",
		"refresh_token_set":        role.RefreshToken != "",
		"assertion_key_set":        role.AssertionKey != "",
		"assertion_alg":            role.AssertionAlg,
		"assertion_kid":            role.AssertionKID,
		"assertion_issuer":         role.AssertionIssuer,
		"assertion_subject":        role.AssertionSubject,
		"assertion_audience":       role.AssertionAudience,
		"assertion_ttl":            int64(role.AssertionTTL.Seconds()),
		"assertion_claims":         role.AssertionClaims,
		"default_ttl":              int64(role.DefaultTTL.Seconds()),
		"max_ttl":                  int64(role.MaxTTL.Seconds()),
	}
	role.clientCredentials.describe(data)
	role.refreshPolicy.describe(data)
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateRoleName(name); err != nil {
		return errorResponse(err)
	}
	if err := rejectUnknownFields(req, d); err != nil {
		return errorResponse(err)
	}
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}

	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()

	old, err := readEntry[roleEntry](ctx, req.Storage, rolePrefix+name)
	if err != nil {
		return nil, err
	}
	role := &roleEntry{
		GrantType:         grantClientCredentials,
		DefaultTTL:        defaultTokenTTL,
		assertionSettings: assertionSettings{AssertionTTL: defaultAssertionTTL},
	}
	if old != nil {
		copied := *old
		role = &copied
	}
	if err := role.update(d); err != nil {
		return errorResponse(err)
	}
	if err := role.validate(cfg); err != nil {
		return errorResponse(err)
	}
	if old == nil {
		// A new role starts clean, whatever an earlier role of that name left behind. An edit
		// needs no clean-up: tokens are served only for the binding they were obtained with.
		if role.Incarnation, err = randomID(); err != nil {
			return nil, err
		}
		if err := b.clearToken(ctx, req.Storage, name); err != nil {
			return nil, err
		}
	}
	if err := putJSON(ctx, req.Storage, rolePrefix+name, role); err != nil {
		return nil, err
	}
	b.cache.roles.set(name, role)
	b.reschedule(ctx, req.Storage, name)
	return nil, nil
}

// update applies the fields present in the request.
func (r *roleEntry) update(d *framework.FieldData) error {
	setString(d, "grant_type", &r.GrantType)
	r.clientCredentials.update(d)
	if v, ok := d.GetOk("scopes"); ok {
		r.Scopes = nonEmpty(v.([]string))
	}
	setString(d, "audience", &r.Audience)
	if v, ok := d.GetOk("resource"); ok {
		r.Resource = nonEmpty(v.([]string))
	}
	if v, ok := d.GetOk("token_params"); ok {
		r.TokenParams = v.(map[string]string)
	}
	if v, ok := d.GetOk("secret_token_params"); ok {
		r.SecretTokenParams = v.(map[string]string)
	}
	setString(d, "username", &r.Username)
	setString(d, "password", &r.Password)
	setString(d, "refresh_token", &r.RefreshToken)
	setString(d, "assertion_key", &r.AssertionKey)
	setString(d, "assertion_alg", &r.AssertionAlg)
	setString(d, "assertion_kid", &r.AssertionKID)
	setString(d, "assertion_issuer", &r.AssertionIssuer)
	setString(d, "assertion_subject", &r.AssertionSubject)
	setString(d, "assertion_audience", &r.AssertionAudience)
	setDuration(d, "assertion_ttl", &r.AssertionTTL)
	if v, ok := d.GetOk("assertion_claims"); ok {
		claims, err := parseClaims(v.(string))
		if err != nil {
			return err
		}
		r.AssertionClaims = claims
	}
	setDuration(d, "default_ttl", &r.DefaultTTL)
	setDuration(d, "max_ttl", &r.MaxTTL)
	r.refreshPolicy.update(d)
	for _, f := range []string{"refresh_buffer", "refresh_fraction"} {
		if _, ok := d.GetOk(f); ok && !slices.Contains(r.RefreshOverrides, f) {
			r.RefreshOverrides = append(r.RefreshOverrides, f)
		}
	}
	return nil
}

func parseClaims(text string) (map[string]any, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	if err := validateLength("assertion_claims", text, maxFieldBytes); err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(text), &claims); err != nil || claims == nil {
		return nil, fieldErrorf("assertion_claims", "must be a JSON object")
	}
	for _, c := range reservedClaims {
		if _, ok := claims[c]; ok {
			return nil, fieldErrorf("assertion_claims", "must not set %q: the plugin sets %s itself", c, strings.Join(reservedClaims, ", "))
		}
	}
	return claims, nil
}

func nonEmpty(values []string) []string {
	out := values[:0:0]
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// validate checks the role on its own and against the config's defaults, when there is one.
func (r *roleEntry) validate(cfg *configEntry) error {
	if err := validateChoice("grant_type", r.GrantType, supportedGrants); err != nil {
		return err
	}
	if err := r.clientCredentials.validate(); err != nil {
		return err
	}
	for _, s := range r.Scopes {
		if !validScopeToken(s) {
			return fieldErrorf("scopes", "%q is not a valid scope (RFC 6749 §3.3: printable ASCII without spaces, quotes or backslashes)", clipInput(s))
		}
	}
	for field, v := range map[string]string{"audience": r.Audience, "username": r.Username, "password": r.Password, "refresh_token": r.RefreshToken, "assertion_issuer": r.AssertionIssuer, "assertion_subject": r.AssertionSubject, "assertion_audience": r.AssertionAudience, "assertion_kid": r.AssertionKID} {
		if err := validateLength(field, v, maxFieldBytes); err != nil {
			return err
		}
	}
	for _, res := range r.Resource {
		// RFC 8707 §2: an absolute URI without a fragment.
		if err := validateResource(res); err != nil {
			return err
		}
	}
	if err := validateTokenParams("token_params", r.TokenParams); err != nil {
		return err
	}
	if err := validateTokenParams("secret_token_params", r.SecretTokenParams); err != nil {
		return err
	}
	for k := range r.SecretTokenParams {
		if _, ok := r.TokenParams[k]; ok {
			return fieldErrorf("secret_token_params", "%q is also in token_params; give each parameter once", clipInput(k))
		}
	}
	for field, v := range map[string]time.Duration{"default_ttl": r.DefaultTTL, "max_ttl": r.MaxTTL} {
		if err := validateDuration(field, v, maxDuration); err != nil {
			return err
		}
	}
	if r.DefaultTTL == 0 {
		return fieldErrorf("default_ttl", "must be more than 0")
	}
	if err := r.refreshPolicy.validate(); err != nil {
		return err
	}
	if err := r.validateGrantInputs(cfg); err != nil {
		return err
	}
	return r.validateClientAuth(cfg)
}

func (r *roleEntry) validateGrantInputs(cfg *configEntry) error {
	switch r.GrantType {
	case grantPassword:
		if r.Username == "" {
			return fieldErrorf("username", "the password grant needs a username")
		}
		if r.Password == "" {
			return fieldErrorf("password", "the password grant needs a password")
		}
	case grantRefreshToken:
		if r.RefreshToken == "" {
			return fieldErrorf("refresh_token", "the refresh_token grant needs a refresh token to import")
		}
	case grantJWTBearer:
		if r.AssertionKey == "" {
			return fieldErrorf("assertion_key", "the jwt_bearer grant needs a key to sign the assertion")
		}
		if err := validateLength("assertion_key", r.AssertionKey, maxPEMBytes); err != nil {
			return err
		}
		if _, err := parseKeyField("assertion_key", "assertion_alg", r.AssertionKey, r.AssertionAlg, r.AssertionKID, false); err != nil {
			return err
		}
		if r.AssertionTTL <= 0 || r.AssertionTTL > maxAssertionTTL {
			return fieldErrorf("assertion_ttl", "must be more than 0 and at most %s", maxAssertionTTL)
		}
		creds := r.effectiveCredentials(cfg)
		if r.AssertionIssuer == "" && creds.ClientID == "" {
			return fieldErrorf("assertion_issuer", "set assertion_issuer or a client_id to use as the assertion's iss")
		}
	}
	return nil
}

// validateClientAuth checks that the client can authenticate the way it is told to, with the
// credentials of the role or, failing those, of the config.
func (r *roleEntry) validateClientAuth(cfg *configEntry) error {
	creds := r.effectiveCredentials(cfg)
	if r.AuthMethod == "" && (cfg == nil || cfg.AuthMethod == "") {
		return nil // chosen at request time from the provider's metadata
	}
	switch creds.AuthMethod {
	case "client_secret_basic", "client_secret_post", "client_secret_jwt":
		if creds.ClientSecret == "" {
			return fieldErrorf("client_secret", "auth_method %s needs a client_secret (on the role or the config)", creds.AuthMethod)
		}
	case "private_key_jwt":
		if _, err := creds.signingKey(); err != nil {
			return err
		}
	}
	if creds.AuthMethod == "client_secret_jwt" && len(creds.ClientSecret) < 32 {
		return fieldErrorf("client_secret", "client_secret_jwt signs with HS256, which needs a client_secret of at least 32 bytes")
	}
	return nil
}

// effectiveCredentials merges the role's client settings over the config's.
func (r *roleEntry) effectiveCredentials(cfg *configEntry) clientCredentials {
	out := r.clientCredentials
	if cfg == nil {
		return out
	}
	if out.ClientID == "" {
		out.ClientID = cfg.ClientID
	}
	if out.ClientSecret == "" && out.ClientKey == "" {
		out.ClientSecret = cfg.ClientSecret
		out.ClientKey, out.ClientKeyAlg, out.ClientKeyKID = cfg.ClientKey, cfg.ClientKeyAlg, cfg.ClientKeyKID
	}
	if out.AuthMethod == "" {
		out.AuthMethod = cfg.AuthMethod
	}
	return out
}

// validScopeToken follows RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" || len(s) > 1024 {
		return false
	}
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func validateResource(res string) error {
	if len(res) > 2048 || !strings.Contains(res, "://") || strings.Contains(res, "#") {
		return fieldErrorf("resource", "%q is not an absolute URI without a fragment (RFC 8707)", clipInput(res))
	}
	return nil
}

func validateTokenParams(field string, params map[string]string) error {
	for k, v := range params {
		if k == "" {
			return fieldErrorf(field, "a parameter has an empty name")
		}
		if slices.Contains(reservedTokenParams, k) {
			return fieldErrorf(field, "%q is set by the plugin and cannot be overridden; reserved: %s", clipInput(k), strings.Join(reservedTokenParams, ", "))
		}
		if len(k)+len(v) > maxFieldBytes {
			return fieldErrorf(field, "parameter %q is longer than %d bytes", clipInput(k), maxFieldBytes)
		}
	}
	return nil
}

// sortedKeys lists a map's keys in order (nil for none).
func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// randomID is 128 random bits, hex-encoded.
func randomID() (string, error) {
	var buf [16]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf[:]), nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateRoleName(name); err != nil {
		return errorResponse(err)
	}
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()
	if err := b.clearToken(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, rolePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting %s%s: %w", rolePrefix, name, err)
	}
	b.cache.roles.drop(name)
	b.forget(name)
	return nil, nil
}

const pathRolesListHelpSyn = `List the roles.`

const pathRolesListHelpDesc = `Lists the names of the roles of this mount.`

const pathRoleHelpSyn = `Manage the grant one application's tokens come from.`

const pathRoleHelpDesc = `
A role describes the token request performed when "creds/<name>" is read: the grant
(client_credentials, password, refresh_token or jwt_bearer), the client that performs it
(client_id, client_secret, auth_method and client_key override the config's defaults), the scopes,
audience, resource and any extra token_params, and the grant's own inputs.

Secrets (client_secret, client_key, password, refresh_token, assertion_key, secret_token_params)
are write-only: a read shows whether each is set, never its value. Changing anything that affects
the token request (not the value of a secret) replaces the cached token at the next read; writing
a field with the value it already has changes nothing. For the refresh_token grant, the refresh
token the provider rotates to is kept with the cached token; writing a different refresh_token
imports a new one.

default_ttl is the lifetime assumed when the provider sends no expires_in; max_ttl caps the lease.
refresh_buffer and refresh_fraction (defaults from config) decide how early tokens are replaced.
`
