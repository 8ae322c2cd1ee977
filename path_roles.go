package oauth

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathRoles(b *backend) []*framework.Path {
	fields := map[string]*framework.FieldSchema{
		"name":                 nameField,
		"grant_type":           {Type: framework.TypeString, Default: grantClientCredentials, Description: "Grant to perform: " + strings.Join(supportedGrants, ", ") + "."},
		"scopes":               {Type: framework.TypeCommaStringSlice, Description: "Scopes to request, comma-separated; sent space-separated as scope."},
		"audience":             {Type: framework.TypeString, Description: "Value of the audience parameter sent to the token endpoint."},
		"resource":             {Type: framework.TypeCommaStringSlice, Description: "RFC 8707 resource indicators to send, comma-separated."},
		"token_params":         {Type: framework.TypeKVPairs, Description: "Extra token request parameters as key=value pairs."},
		"secret_token_params":  {Type: framework.TypeKVPairs, Description: "Extra token request parameters whose values are secret (an API key, say), as key=value pairs. Write-only: a read shows only their names.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"username":             {Type: framework.TypeString, Description: "password grant: the resource owner's username."},
		"password":             {Type: framework.TypeString, Description: "password grant: the resource owner's password. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"refresh_token":        {Type: framework.TypeString, Description: "refresh_token grant: the refresh token to import. Replaced by each rotation. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"assertion_key":        {Type: framework.TypeString, Description: "jwt_bearer grant: PEM private key (RSA, EC) or HMAC shared secret that signs the assertion. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		"assertion_key_name":   {Type: framework.TypeString, Description: "jwt_bearer grant: mount key (keys/<name>) that signs the assertion, instead of assertion_key; the JWT carries its kid."},
		"assertion_alg":        {Type: framework.TypeString, Description: "jwt_bearer grant: JWS alg; defaults from the key (RS256, ES256, HS256)."},
		"assertion_kid":        {Type: framework.TypeString, Description: "jwt_bearer grant: JWS kid header."},
		"assertion_issuer":     {Type: framework.TypeString, Description: "jwt_bearer grant: iss claim; defaults to the client ID."},
		"assertion_subject":    {Type: framework.TypeString, Description: "jwt_bearer grant: sub claim; defaults to the client ID."},
		"assertion_audience":   {Type: framework.TypeString, Description: "jwt_bearer grant: aud claim; defaults to the token endpoint URL."},
		"assertion_ttl":        {Type: framework.TypeDurationSecond, Description: "jwt_bearer grant: assertion lifetime (default 5m)."},
		"assertion_claims":     {Type: framework.TypeString, Description: "jwt_bearer grant: extra claims, as a JSON object."},
		"subject_role":         {Type: framework.TypeString, Description: "token_exchange grant: the role whose access token is the subject token. Without one, readers supply the subject token at exchange/<name>."},
		"actor_role":           {Type: framework.TypeString, Description: "token_exchange grant: the role whose access token is sent as the actor token."},
		"requested_token_type": {Type: framework.TypeString, Description: "token_exchange grant: the token type to ask for, a URN (RFC 8693 §3) or access_token, refresh_token, id_token, jwt, saml1, saml2 (default access_token)."},
		"redirect_uri":         {Type: framework.TypeString, Description: "authorization_code grant: the redirect URI registered at the provider (default: the config's), e.g. https://vault.example.com/v1/oauth/callback."},
		"auth_params":          {Type: framework.TypeCommaStringSlice, Description: "authorization_code grant: extra authorization request parameters as comma-separated key=value pairs (e.g. access_type=offline,prompt=consent)."},
		"response_mode":        {Type: framework.TypeString, Default: responseModeQuery, AllowedValues: []any{responseModeQuery, responseModeFormPost}, Description: "authorization_code grant: how the provider returns the code to the redirect URI: query (in the URL) or form_post (a form the browser posts, which keeps the code and state out of URLs and of the request_uri of Vault's audit log)."},
		"default_ttl":          {Type: framework.TypeDurationSecond, Description: "Lifetime assumed for tokens whose response has no expires_in (default 1h)."},
		"max_ttl":              {Type: framework.TypeDurationSecond, Description: "Upper bound on a creds lease, whatever the token's lifetime (0: no bound)."},
		"lease":                {Type: framework.TypeBool, Description: "creds answers are non-renewable leases (true), or carry ttl and rotation_period instead, with no lease (false). Default: the config's lease."},
		"dpop":                 {Type: framework.TypeBool, Description: "OAuth 2.0 roles: bind tokens to a key generated and held in Vault (DPoP, RFC 9449); turning it on makes a new key."},
	}
	maps.Copy(fields, oauth1Fields)
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
				logical.ListOperation: operation("List the roles.", b.pathRolesList, http.StatusOK, map[string]*framework.FieldSchema{
					"keys": {Type: framework.TypeStringSlice, Description: "Role names."},
				}),
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
				logical.ReadOperation:   operation("Read a role (secrets show only whether they are set).", b.pathRoleRead, http.StatusOK, roleReadFields),
				logical.CreateOperation: forwarded(operation("Create a role.", b.pathRoleWrite, http.StatusNoContent, nil)),
				logical.UpdateOperation: forwarded(operation("Update a role; fields not given keep their values.", b.pathRoleWrite, http.StatusNoContent, nil)),
				logical.DeleteOperation: forwarded(operation("Delete a role and its cached tokens.", b.pathRoleDelete, http.StatusNoContent, nil)),
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

func (b *backend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, rolePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	role, err := b.role(ctx, req.Storage, d.Get("name").(string))
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
		"assertion_key_name":       role.AssertionKeyName,
		"assertion_alg":            role.AssertionAlg,
		"assertion_kid":            role.AssertionKID,
		"assertion_issuer":         role.AssertionIssuer,
		"assertion_subject":        role.AssertionSubject,
		"assertion_audience":       role.AssertionAudience,
		"assertion_ttl":            int64(role.AssertionTTL.Seconds()),
		"assertion_claims":         role.AssertionClaims,
		"subject_role":             role.SubjectRole,
		"actor_role":               role.ActorRole,
		"requested_token_type":     role.RequestedTokenType,
		"redirect_uri":             role.RedirectURI,
		"auth_params":              role.AuthParams,
		"response_mode":            role.responseMode(),
		"default_ttl":              int64(role.DefaultTTL.Seconds()),
		"max_ttl":                  int64(role.MaxTTL.Seconds()),
		"lease":                    role.Lease,
		"dpop":                     role.DPoP,
	}
	role.oauth1Settings.describe(data)
	role.clientCredentials.describe(data)
	role.refreshPolicy.describe(data)
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}

	// Role writes and deletes take chainMu first, so that the chain checks see every other
	// role as it will be stored.
	b.chainMu.Lock()
	defer b.chainMu.Unlock()
	old, unlock, err := b.lockRole(ctx, req.Storage, name)
	defer unlock()
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
	if err := b.checkChain(ctx, req.Storage, name, role); err != nil {
		return errorResponse(err)
	}
	if err := b.checkKeyNames(ctx, req.Storage, role.keyNames()); err != nil {
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
		if err := b.dropPending(ctx, req.Storage, name); err != nil {
			return nil, err
		}
	}
	if err := putJSON(ctx, req.Storage, rolePrefix+name, role); err != nil {
		return nil, err
	}
	b.cache.roles.set(name, role)
	b.exchanges.clear()
	b.reschedule(ctx, req.Storage, name)
	return nil, nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.chainMu.Lock()
	defer b.chainMu.Unlock()
	users, err := b.dependents(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(users) > 0 {
		return errorResponse(fieldErrorf("name", "role %q is the subject_role or actor_role of %s: change or delete those roles first", name, strings.Join(users, ", ")))
	}
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()
	if err := b.clearToken(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	if err := b.dropPending(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, rolePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting %s%s: %w", rolePrefix, name, err)
	}
	b.cache.roles.drop(name)
	b.exchanges.clear()
	b.forget(name)
	b.dpopNonces.Delete(name)
	b.dpopKeys.Delete(name)
	b.metrics.forgetRole(name)
	return nil, nil
}

// roleTarget is what an operation on one role works with.
type roleTarget struct {
	name string
	role *roleEntry
	// cfg is nil while the mount has no config.
	cfg *configEntry
}

// loadRoleTarget loads the role a request names and the config, which must exist when
// needConfig is set. An unknown role and a missing config are for errorResponse to report;
// anything else is storage failing.
func (b *backend) loadRoleTarget(ctx context.Context, req *logical.Request, d *framework.FieldData, needConfig bool) (*roleTarget, error) {
	name := d.Get("name").(string)
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return nil, unknownRoleError(name)
	}
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil && needConfig {
		return nil, errNoConfig
	}
	return &roleTarget{name: name, role: role, cfg: cfg}, nil
}

// roleReadFields is what a role read answers.
var roleReadFields = func() map[string]*framework.FieldSchema {
	fields := maps.Clone(oauth1ReadFields)
	maps.Copy(fields, baseRoleReadFields)
	return fields
}()

// baseRoleReadFields are those of every role.
var baseRoleReadFields = map[string]*framework.FieldSchema{
	"dpop":                      {Type: framework.TypeBool, Description: "Whether tokens are bound to the role's DPoP key."},
	"grant_type":                {Type: framework.TypeString, Description: "Grant the role performs."},
	"scopes":                    {Type: framework.TypeStringSlice, Description: "Scopes requested."},
	"audience":                  {Type: framework.TypeString, Description: "audience parameter."},
	"resource":                  {Type: framework.TypeStringSlice, Description: "RFC 8707 resource indicators."},
	"token_params":              {Type: framework.TypeKVPairs, Description: "Extra token request parameters."},
	"secret_token_param_names":  {Type: framework.TypeStringSlice, Description: "Names of the secret token request parameters."},
	"username":                  {Type: framework.TypeString, Description: "password grant: username."},
	"password_set":              {Type: framework.TypeBool, Description: "Whether a password is set."},
	"refresh_token_set":         {Type: framework.TypeBool, Description: "Whether a refresh token was imported."},
	"assertion_key_set":         {Type: framework.TypeBool, Description: "Whether an assertion key is set."},
	"assertion_alg":             {Type: framework.TypeString, Description: "Assertion JWS alg."},
	"assertion_kid":             {Type: framework.TypeString, Description: "Assertion kid."},
	"assertion_issuer":          {Type: framework.TypeString, Description: "Assertion iss."},
	"assertion_subject":         {Type: framework.TypeString, Description: "Assertion sub."},
	"assertion_audience":        {Type: framework.TypeString, Description: "Assertion aud."},
	"assertion_ttl":             {Type: framework.TypeInt, Description: "Assertion lifetime (seconds)."},
	"assertion_claims":          {Type: framework.TypeMap, Description: "Extra assertion claims."},
	"redirect_uri":              {Type: framework.TypeString, Description: "authorization_code grant: redirect URI (empty: the config's)."},
	"auth_params":               {Type: framework.TypeKVPairs, Description: "authorization_code grant: extra authorization request parameters."},
	"response_mode":             {Type: framework.TypeString, Description: "authorization_code grant: query or form_post."},
	"default_ttl":               {Type: framework.TypeInt, Description: "Lifetime assumed without expires_in (seconds)."},
	"max_ttl":                   {Type: framework.TypeInt, Description: "Upper bound on a creds lease (seconds)."},
	"lease":                     {Type: framework.TypeBool, Description: "Whether creds answers are leases; null: the config's default."},
	"client_id":                 {Type: framework.TypeString, Description: "Client ID overriding the config's."},
	"client_secret_set":         {Type: framework.TypeBool, Description: "Whether the role sets a client secret."},
	"auth_method":               {Type: framework.TypeString, Description: "Client authentication overriding the config's."},
	"client_key_set":            {Type: framework.TypeBool, Description: "Whether the role sets a private_key_jwt key."},
	"client_key_alg":            {Type: framework.TypeString, Description: "JWS alg of the role's key."},
	"client_key_kid":            {Type: framework.TypeString, Description: "kid of the role's key."},
	"assertion_key_name":        {Type: framework.TypeString, Description: "Mount key that signs the assertion."},
	"subject_role":              {Type: framework.TypeString, Description: "token_exchange: the role whose token is the subject token (empty: the reader's, at exchange/<name>)."},
	"actor_role":                {Type: framework.TypeString, Description: "token_exchange: the role whose token is the actor token."},
	"requested_token_type":      {Type: framework.TypeString, Description: "token_exchange: the token type asked for (empty: access token)."},
	"client_key_name":           {Type: framework.TypeString, Description: "Mount key that signs the role's private_key_jwt."},
	"client_cert":               {Type: framework.TypeString, Description: "The role's mTLS client certificate (PEM)."},
	"client_secret_next_set":    {Type: framework.TypeBool, Description: "Whether the role sets a client_secret_next."},
	"client_secret_promoted_at": {Type: framework.TypeString, Description: "When the role's client_secret_next last became its client_secret."},
	"refresh_buffer":            {Type: framework.TypeInt, Description: "Refresh buffer the role sets (seconds)."},
	"refresh_fraction":          {Type: framework.TypeFloat, Description: "Refresh fraction the role sets."},
}

const pathRolesListHelpSyn = `List the roles.`

const pathRolesListHelpDesc = `Lists the names of the roles of this mount.`

const pathRoleHelpSyn = `Manage the grant one application's tokens come from.`

const pathRoleHelpDesc = `
A role describes the token request performed when "creds/<name>" is read: the grant
(client_credentials, password, refresh_token, jwt_bearer, or authorization_code and device_code,
which a person authorizes once through "authorize/<name>" or "device/<name>"), the client that performs it
(client_id, client_secret, auth_method and client_key override the config's defaults), the scopes,
audience, resource and any extra token_params, and the grant's own inputs.

client_key_name and assertion_key_name sign with a mount key (keys/<name>) instead of a pasted
key; client_cert is the certificate of tls_client_auth; client_secret_next is tried when the
provider refuses client_secret (invalid_client) and promoted when it works.

An oauth1 role holds OAuth 1.0a credentials (consumer_key, consumer_secret or consumer_private_key,
token and token_secret, or the three-legged flow's endpoints) and signs requests at sign/<name>.

Secrets (client_secret, client_secret_next, client_key, password, refresh_token, assertion_key,
secret_token_params, consumer_secret, consumer_private_key, token, token_secret)
are write-only: a read shows whether each is set, never its value. Changing anything that affects
the token request (not the value of a secret) replaces the cached token at the next read; writing
a field with the value it already has changes nothing. For the refresh_token grant, the refresh
token the provider rotates to is kept with the cached token; writing a different refresh_token
imports a new one.

token_exchange (RFC 8693) exchanges the access token of subject_role (and sends that of
actor_role as the actor token) for one with the role's audience, resource and scopes; its token
is replaced whenever theirs is. Without subject_role, readers write their own subject token to
"exchange/<name>". A loop of subject_role / actor_role is refused, and so is deleting a role
that another uses as its subject or actor.

default_ttl is the lifetime assumed when the provider sends no expires_in; max_ttl caps the lease.
refresh_buffer and refresh_fraction (defaults from config) decide how early tokens are replaced.
`
