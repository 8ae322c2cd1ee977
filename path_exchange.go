package oauth

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// maxSubjectTokenBytes bounds a reader's subject token: a large JWT is a few KiB.
const maxSubjectTokenBytes = 64 << 10

func pathExchange(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "exchange/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "exchange",
			OperationSuffix: "token",
		},
		Fields: map[string]*framework.FieldSchema{
			"name":               nameField,
			"subject_token":      {Type: framework.TypeString, Required: true, Description: "The token to exchange (RFC 8693 subject_token): one the reader received. Never stored, logged or echoed.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
			"subject_token_type": {Type: framework.TypeString, Default: "access_token", Description: "Its type: a URN (RFC 8693 §3) or access_token, refresh_token, id_token, jwt, saml1, saml2."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(operation("Exchange the reader's subject token for one with the role's audience, resource and scopes (cached in memory per subject token).", b.pathExchangeWrite, http.StatusOK, accessTokenFields)),
		},
		HelpSynopsis:    pathExchangeHelpSyn,
		HelpDescription: pathExchangeHelpDesc,
	}
}

func (b *backend) pathExchangeWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, true)
	if err != nil {
		return errorResponse(err)
	}
	name, role, cfg := target.name, target.role, target.cfg
	switch {
	case role.GrantType != grantTokenExchange:
		return errorResponse(fieldErrorf("name", "role %q has grant_type=%s; exchange/ takes token_exchange roles", name, role.GrantType))
	case !role.readerSupplied():
		return errorResponse(fieldErrorf("name", "role %q exchanges the token of subject_role %q: read creds/%s", name, role.SubjectRole, name))
	}
	subject := d.Get("subject_token").(string)
	if subject == "" {
		return errorResponse(fieldErrorf("subject_token", "is required"))
	}
	if err := validateLength("subject_token", subject, maxSubjectTokenBytes); err != nil {
		return errorResponse(err)
	}
	subjectType := tokenTypeURN(d.Get("subject_token_type").(string))
	if err := validateTokenType("subject_token_type", subjectType); err != nil {
		return errorResponse(err)
	}
	in := exchangeInputs{subjectToken: subject, subjectTokenType: subjectType}

	label := roleLabel(name, cfg)
	bd, err := b.binding(ctx, req.Storage, name, role, cfg)
	if err != nil {
		return nil, err
	}
	key := exchangeKey(name, bd, in)
	if tok := b.exchanges.get(key, b.now()); tok != nil {
		b.metrics.observeRead(label, readHit)
		return b.exchangeResponse(tok), nil
	}
	v, err, _ := b.exchanges.flights.Do(key, func() (any, error) {
		if !b.grantsOpen.enter() {
			return nil, errClosing
		}
		defer b.grantsOpen.leave()
		// Shared by every request for this subject: one that gives up must not cancel it.
		return b.exchange(context.WithoutCancel(ctx), req.Storage, name, role, cfg, in)
	})
	if err != nil {
		b.metrics.observeRead(label, readError)
		return grantErrorResponse(err)
	}
	b.metrics.observeRead(label, readMiss)
	return b.exchangeResponse(v.(*tokenEntry)), nil
}

// exchange performs the token exchange for the reader's subject token and caches the result
// until its refresh threshold, or the subject token's exp when it is a JWT that expires sooner.
func (b *backend) exchange(ctx context.Context, s logical.Storage, name string, role *roleEntry, cfg *configEntry, in exchangeInputs) (*tokenEntry, error) {
	gen := b.exchanges.current()
	if role.ActorRole != "" {
		chain, err := b.chainTokens(ctx, s, name, role)
		if err != nil {
			return nil, err
		}
		in.actorToken = chain.actorToken
	}
	bd := b.cache.binding(name, role, cfg)
	if role.chains() {
		// Bound to the actor token actually sent, as binding binds the one served now.
		bd = chained(bd, exchangeInputs{actorToken: in.actorToken})
	}
	now := b.now()
	sent := time.Now()
	tok, err := b.requestToken(ctx, s, name, cfg, role, bd, nil, in)
	b.metrics.observeGrant(roleLabel(name, cfg), role.GrantType, time.Since(sent), err)
	if err != nil {
		return nil, err
	}
	entry := newTokenEntry(tok, nil, role, bd, now)
	until := entry.ExpiresAt.Add(-refreshThreshold(effectivePolicy(role, cfg), entry.lifetime()))
	if exp, ok := jwtExpiry(in.subjectToken); ok && exp.Before(until) {
		until = exp
	}
	if until.After(b.now()) {
		b.exchanges.put(exchangeKey(name, bd, in), entry, until, gen)
	}
	return entry, nil
}

// exchangeKey identifies an exchange: the role as bound now (its settings and actor token) and
// the subject token, by digest only.
func exchangeKey(name string, bd tokenBinding, in exchangeInputs) string {
	return digestJSON([]string{name, bd.access, digest(in.subjectToken), in.subjectTokenType})
}

// exchangeResponse is creds' data without a lease: the token belongs to the reader's subject, and
// the cache that holds it is the mount's memory, not storage.
func (b *backend) exchangeResponse(tok *tokenEntry) *logical.Response {
	data := map[string]any{
		"access_token":      tok.AccessToken,
		"token_type":        tok.TokenType,
		"expires_at":        rfc3339(tok.ExpiresAt),
		"expires_in":        int64(tok.remaining(b.now()).Seconds()),
		"scope":             tok.Scope,
		"issued_token_type": tok.IssuedType,
	}
	if tok.IDToken != "" {
		data["id_token"] = tok.IDToken
	}
	return &logical.Response{Data: data}
}

const pathExchangeHelpSyn = `Exchange a reader's token for one to call the next API on its subject's behalf.`

const pathExchangeHelpDesc = `
On-behalf-of token exchange (RFC 8693): a service that received a user's token writes it as
subject_token and gets a token with the role's audience, resource and scopes, issued for the
same subject. The role must have grant_type=token_exchange and no subject_role; with an
actor_role, that role's token is sent as the actor token.

Audience, resource and scopes are the role's only: a reader cannot widen them. Answers are
cached in memory (never in storage) per role, subject token and subject_token_type, until the
token falls to its refresh threshold or the subject token's exp (when it is a JWT) passes,
whichever comes first; concurrent requests for one subject token share one exchange. The cache
is bounded and cleared by any role or config change. The answer carries no lease. The subject
token is never stored, logged or echoed, not even in an error.
`
