package oauth

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// secretAccessTokenType is the lease type of creds responses.
const secretAccessTokenType = "access_token"

func pathCreds(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "creds/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "generate",
			OperationSuffix: "credentials",
		},
		Fields: map[string]*framework.FieldSchema{
			"name":        nameField,
			"min_seconds": {Type: framework.TypeInt, Description: "Obtain a new token unless the cached one has at least this many seconds left."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			// Not forwarded as a whole: standbys answer cache hits themselves, and a miss
			// returns ErrReadOnly there, which makes Vault forward that request.
			logical.ReadOperation: operation("Read a valid access token for the role, as a lease (or with ttl and rotation_period for lease=false roles).", b.pathCredsRead, http.StatusOK, credsFields),
		},
		HelpSynopsis:    pathCredsHelpSyn,
		HelpDescription: pathCredsHelpDesc,
	}
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, false)
	if err != nil {
		return errorResponse(err)
	}
	name, role, cfg := target.name, target.role, target.cfg
	if role.GrantType == grantOAuth1 {
		resp, err := errorResponse(oauth1NoToken(name))
		return withMount(resp, req.MountPoint), err
	}
	if cfg == nil {
		return errorResponse(errNoConfig)
	}
	minSeconds := d.Get("min_seconds").(int)
	if minSeconds < 0 || time.Duration(minSeconds)*time.Second > maxDuration {
		return errorResponse(fieldErrorf("min_seconds", "must be between 0 and %d", int(maxDuration.Seconds())))
	}
	minLeft := time.Duration(minSeconds) * time.Second
	if role.readerSupplied() {
		return errorResponse(fieldErrorf("name", "role %q exchanges the reader's subject token: write it to exchange/%s", name, name))
	}

	out, err := b.tokenFor(ctx, req.Storage, name, role, cfg, minLeft)
	if err != nil {
		return nil, err
	}
	if out.token == nil {
		resp, err := grantErrorResponse(out.err)
		return withMount(resp, req.MountPoint), err
	}
	resp := b.credsResponse(name, role, cfg, out.token)
	for _, w := range out.warnings(b.now(), minLeft) {
		resp.AddWarning(w)
	}
	return resp, nil
}

// tokenFor is the role's token for a reader that needs minLeft: the cached one (the hot path: a
// token with enough life left costs no network and no storage write), else a grant's outcome.
// A token storage refused takes the slow path, which stores it first.
func (b *backend) tokenFor(ctx context.Context, s logical.Storage, name string, role *roleEntry, cfg *configEntry, minLeft time.Duration) (grantOutcome, error) {
	if _, unsaved := b.unsaved.Load(name); !unsaved {
		tok, err := b.currentToken(ctx, s, name)
		if err != nil {
			return grantOutcome{}, err
		}
		bd, err := b.binding(ctx, s, name, role, cfg)
		if err != nil {
			return grantOutcome{}, err
		}
		if tok.serves(bd, effectivePolicy(role, cfg), minLeft, b.now()) {
			b.metrics.observeRead(roleLabel(name, cfg), readHit)
			return grantOutcome{token: tok}, nil
		}
	}
	if !b.WriteSafeReplicationState() {
		// A miss calls the provider and writes storage: only the node that may write does it.
		return grantOutcome{}, logical.ErrReadOnly
	}
	out := b.obtainToken(ctx, s, name, minLeft, byRead)
	switch {
	case out.token == nil:
		b.metrics.observeRead(roleLabel(name, cfg), readError)
	case out.err != nil:
		b.metrics.observeRead(roleLabel(name, cfg), readStale)
	default:
		b.metrics.observeRead(roleLabel(name, cfg), readMiss)
	}
	return out, nil
}

// warnings tell a reader why the token served is not the one asked for.
func (out grantOutcome) warnings(now time.Time, minLeft time.Duration) []string {
	var warnings []string
	if out.err != nil {
		warnings = append(warnings, fmt.Sprintf("serving the cached token, which expires at %s: obtaining a new one failed: %v", rfc3339(out.token.ExpiresAt), out.err))
	}
	if out.warning != "" {
		warnings = append(warnings, out.warning)
	}
	if left := out.token.remaining(now); left < minLeft {
		warnings = append(warnings, fmt.Sprintf("the token has %ds left, less than min_seconds=%d: the provider issues shorter-lived tokens", int(left.Seconds()), int(minLeft.Seconds())))
	}
	return warnings
}

// credsResponse is a non-renewable lease lasting exactly as long as the token (or max_ttl), or,
// for a role without leases, the same data with the times Vault Agent needs to read it again.
func (b *backend) credsResponse(name string, role *roleEntry, cfg *configEntry, tok *tokenEntry) *logical.Response {
	left := tok.remaining(b.now())
	ttl := left
	if role.MaxTTL > 0 {
		ttl = min(ttl, role.MaxTTL)
	}
	data := map[string]any{
		"access_token": tok.AccessToken,
		"token_type":   tok.TokenType,
		"expires_at":   rfc3339(tok.ExpiresAt),
		"expires_in":   int64(left.Seconds()),
		"scope":        tok.Scope,
	}
	if tok.IDToken != "" {
		data["id_token"] = tok.IDToken
	}
	if tok.IssuedType != "" {
		data["issued_token_type"] = tok.IssuedType
	}
	if !role.leased(cfg) {
		ttl, period := rotationTimes(left, tok.lifetime(), refreshThreshold(effectivePolicy(role, cfg), tok.lifetime()))
		if role.MaxTTL > 0 {
			// max_ttl bounds how long a reader holds one answer, with or without a lease.
			ttl = min(ttl, int64(role.MaxTTL.Seconds()))
		}
		data["ttl"], data["rotation_period"] = ttl, period
		return &logical.Response{Data: data}
	}
	resp := b.Secret(secretAccessTokenType).Response(data, map[string]any{"role": name})
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	resp.Secret.Renewable = false
	return resp
}

// staleRereadAfter is the ttl of a token served below its refresh threshold (the provider is
// failing): Agent comes back soon, not every second.
const staleRereadAfter = 10 * time.Second

// rotationTimes are the ttl and rotation_period of a lease-less answer, in whole seconds. Vault
// Agent reads such a secret again ttl + 1 s later; ttl ends when the token falls to its refresh
// threshold, by which time the refresher has replaced it or the read replaces it, so every
// rendered token has at least its threshold left. rotation_period is how often a new token comes.
func rotationTimes(left, lifetime, threshold time.Duration) (ttl, period int64) {
	next := left - threshold
	if next <= 0 {
		next = min(left, staleRereadAfter)
	}
	return int64(next.Seconds()), max(int64((lifetime - threshold).Seconds()), 1)
}

func secretAccessToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type:   secretAccessTokenType,
		Fields: accessTokenFields,
		// Many readers share one token: ending one reader's lease must not end the token for
		// the others, so revocation is local to Vault.
		Revoke: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
			return nil, nil
		},
	}
}

// accessTokenFields is what a creds read answers.
var accessTokenFields = map[string]*framework.FieldSchema{
	"access_token":      {Type: framework.TypeString, Description: "OAuth 2.0 access token."},
	"token_type":        {Type: framework.TypeString, Description: "Token type, usually Bearer."},
	"expires_at":        {Type: framework.TypeString, Description: "When the token expires (RFC 3339)."},
	"expires_in":        {Type: framework.TypeInt, Description: "Seconds the token has left."},
	"scope":             {Type: framework.TypeString, Description: "Scope the provider granted."},
	"id_token":          {Type: framework.TypeString, Description: "OpenID Connect ID token, when the provider sent one."},
	"issued_token_type": {Type: framework.TypeString, Description: "token_exchange: the type of the issued token (RFC 8693 issued_token_type)."},
}

// credsFields is what a creds read answers: the token, and for lease-less roles the rotation
// times.
var credsFields = func() map[string]*framework.FieldSchema {
	fields := maps.Clone(accessTokenFields)
	fields["ttl"] = &framework.FieldSchema{Type: framework.TypeInt, Description: "lease=false: seconds until the plugin will have replaced this token."}
	fields["rotation_period"] = &framework.FieldSchema{Type: framework.TypeInt, Description: "lease=false: seconds between two tokens of the role."}
	return fields
}()

const pathCredsHelpSyn = `Read a valid access token for the role.`

const pathCredsHelpDesc = `
Returns an OAuth 2.0 access token for the role, as a non-renewable lease that lasts as long as
the token has left. Tokens are cached and shared by every reader of the role; a new one is obtained
when the cached one nears expiry (see the role's refresh_buffer and refresh_fraction), and
concurrent readers then share a single request to the provider.

min_seconds asks for a token with at least that many seconds left, obtaining a new one if the
cached token has less: an application whose token was rejected can use it to get a fresh one.
A token obtained that way is served to every read for 5 seconds, whatever min_seconds asks (with a
warning), so that readers cannot make the plugin call the provider on every read.

If the provider fails while the cached token is still valid, the cached token is returned with a
warning. Revoking a lease does not revoke the token at the provider.
`
