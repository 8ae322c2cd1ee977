package oauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// RFC 8693 §3 token type identifiers.
const (
	tokenTypePrefix      = "urn:ietf:params:oauth:token-type:"
	tokenTypeAccessToken = tokenTypePrefix + "access_token"
)

// tokenTypes are the short names requested_token_type and subject_token_type take for the RFC
// 8693 §3 URNs; any other URN is passed as given.
var tokenTypes = []string{"access_token", "refresh_token", "id_token", "saml1", "saml2", "jwt"}

// tokenTypeURN expands a short token type name to its URN.
func tokenTypeURN(v string) string {
	if slices.Contains(tokenTypes, v) {
		return tokenTypePrefix + v
	}
	return v
}

func validateTokenType(field, v string) error {
	if err := validateLength(field, v, 256); err != nil {
		return err
	}
	if !strings.HasPrefix(v, "urn:") {
		return fieldErrorf(field, "%q is not a token type: use a URN (RFC 8693 §3) or one of %s", clipInput(v), strings.Join(tokenTypes, ", "))
	}
	return nil
}

// exchangeSettings configure the token exchange grant (RFC 8693).
type exchangeSettings struct {
	// SubjectRole and ActorRole name the roles whose access tokens are the subject and actor
	// tokens. Without a subject role, the reader supplies the subject token at exchange/<name>.
	SubjectRole        string `json:"subject_role,omitempty"`
	ActorRole          string `json:"actor_role,omitempty"`
	RequestedTokenType string `json:"requested_token_type,omitempty"`
}

// chains reports whether the role's tokens come from the tokens of other roles.
func (r *roleEntry) chains() bool { return r.SubjectRole != "" || r.ActorRole != "" }

// readerSupplied reports whether the role's subject token comes from the reader (exchange/),
// so that the role has no token of its own to serve or refresh.
func (r *roleEntry) readerSupplied() bool {
	return r.GrantType == grantTokenExchange && r.SubjectRole == ""
}

// tokenless says why the role has no access token of its own to serve ("" when it has one).
func (r *roleEntry) tokenless() string {
	switch {
	case r.readerSupplied():
		return "its subject token comes from the reader, at exchange/<name>"
	case r.GrantType == grantOAuth1:
		return "it signs OAuth 1.0a requests at sign/<name>"
	}
	return ""
}

// exchangeInputs are the tokens a token exchange sends.
type exchangeInputs struct {
	subjectToken, subjectTokenType string
	actorToken                     string
}

// tokenExchangeFlow is RFC 8693 §2.1: the subject token (another role's, or the reader's) is
// exchanged for one with the role's audience, resource and scopes.
var tokenExchangeFlow = grantFlow{
	validate: func(r *roleEntry, _ *configEntry) error {
		for field, v := range map[string]string{"subject_role": r.SubjectRole, "actor_role": r.ActorRole} {
			if v == "" {
				continue
			}
			if !roleNameRegex.MatchString(v) {
				return fieldErrorf(field, "%q is not a valid role name", clipInput(v))
			}
		}
		if r.DPoP && r.readerSupplied() {
			return fieldErrorf("dpop", "exchange/ answers the token to the reader, who holds no DPoP key to prove it with; a role with a subject_role may use DPoP, through sign/<name>")
		}
		if r.RequestedTokenType != "" {
			return validateTokenType("requested_token_type", r.RequestedTokenType)
		}
		return nil
	},
	request: func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
		in := g.exchange
		if in.subjectToken == "" {
			return nil, fmt.Errorf("the role takes its subject token from the reader: write it to exchange/<name>")
		}
		g.req.GrantType = oauthclient.GrantTokenExchange
		g.req.Params.Set("subject_token", in.subjectToken)
		g.req.Params.Set("subject_token_type", in.subjectTokenType)
		if in.actorToken != "" {
			g.req.Params.Set("actor_token", in.actorToken)
			g.req.Params.Set("actor_token_type", tokenTypeAccessToken)
		}
		g.req.Params.Set("requested_token_type", firstNonEmpty(g.role.RequestedTokenType, tokenTypeAccessToken))
		tok, err := g.client.Exchange(ctx, g.req)
		if err != nil {
			// Before anyone logs, records or answers it.
			return nil, withheld(withheld(err, in.subjectToken), in.actorToken)
		}
		return tok, nil
	},
}

// maxChain bounds how many roles a subject_role / actor_role chain may pass through.
const maxChain = 8

// binding is the binding a role's token must have to be served: bindingOf, and for a role that
// chains, the access tokens its subject and actor roles serve now. A new token of either role
// (rotated, refreshed, or retired by an edit) thus retires the chained role's token, through the
// same check that retires a token after an edit.
func (b *backend) binding(ctx context.Context, s logical.Storage, name string, role *roleEntry, cfg *configEntry) (tokenBinding, error) {
	return b.bindingAt(ctx, s, name, role, cfg, 0)
}

func (b *backend) bindingAt(ctx context.Context, s logical.Storage, name string, role *roleEntry, cfg *configEntry, depth int) (tokenBinding, error) {
	return b.chainBinding(ctx, s, name, b.cache.binding(name, role, cfg), role, cfg, depth)
}

// chainBinding adds to bd, the role's own binding, the tokens its subject and actor roles serve.
// It takes no lock: callers may hold the role's.
func (b *backend) chainBinding(ctx context.Context, s logical.Storage, name string, bd tokenBinding, role *roleEntry, cfg *configEntry, depth int) (tokenBinding, error) {
	if !role.chains() {
		return bd, nil
	}
	if depth >= maxChain {
		return tokenBinding{}, fmt.Errorf("role %q: the subject_role / actor_role chain is longer than %d roles or loops", name, maxChain)
	}
	var in exchangeInputs
	var err error
	if in.subjectToken, err = b.servedToken(ctx, s, role.SubjectRole, cfg, depth+1); err != nil {
		return tokenBinding{}, err
	}
	if in.actorToken, err = b.servedToken(ctx, s, role.ActorRole, cfg, depth+1); err != nil {
		return tokenBinding{}, err
	}
	return chained(bd, in), nil
}

// servedToken is the access token the named role serves now ("" for none). Time is left out, so
// that the binding stays the same while that token lives.
func (b *backend) servedToken(ctx context.Context, s logical.Storage, name string, cfg *configEntry, depth int) (string, error) {
	if name == "" {
		return "", nil
	}
	role, err := b.role(ctx, s, name)
	if err != nil || role == nil {
		return "", err
	}
	tok, err := b.currentToken(ctx, s, name)
	if err != nil || tok == nil {
		return "", err
	}
	bd, err := b.bindingAt(ctx, s, name, role, cfg, depth)
	if err != nil {
		return "", err
	}
	if tok.Binding != "" && tok.Binding != bd.access {
		return "", nil
	}
	return tok.AccessToken, nil
}

// chained binds bd to the subject and actor tokens: only their digests enter the binding.
func chained(bd tokenBinding, in exchangeInputs) tokenBinding {
	bd.access = digest(bd.access + "\x00" + digest(in.subjectToken) + "\x00" + digest(in.actorToken))
	return bd
}

type chainKey struct{}

// chainTokens obtains the access tokens of the role's subject and actor roles, as reads of their
// creds would: cached, shared with concurrent readers, refreshed when due. No lock is held.
func (b *backend) chainTokens(ctx context.Context, s logical.Storage, name string, role *roleEntry) (exchangeInputs, error) {
	// Cycles are refused when roles are written; this refuses one that got through (written on
	// another cluster, say) instead of waiting on itself.
	seen, _ := ctx.Value(chainKey{}).([]string)
	if slices.Contains(seen, name) || len(seen) >= maxChain {
		return exchangeInputs{}, fmt.Errorf("role %q: the subject_role / actor_role chain %s loops or is too long", name, strings.Join(append(seen, name), " -> "))
	}
	ctx = context.WithValue(ctx, chainKey{}, append(slices.Clip(seen), name))
	in := exchangeInputs{subjectTokenType: tokenTypeAccessToken}
	for _, ref := range []struct {
		field, role string
		dst         *string
	}{{"subject_role", role.SubjectRole, &in.subjectToken}, {"actor_role", role.ActorRole, &in.actorToken}} {
		if ref.role == "" {
			continue
		}
		out := b.obtainToken(ctx, s, ref.role, 0, byRead)
		if out.token == nil {
			return exchangeInputs{}, fmt.Errorf("obtaining the token of %s %q failed: %w", ref.field, ref.role, out.err)
		}
		*ref.dst = out.token.AccessToken
	}
	return in, nil
}

// checkChain refuses a subject_role or actor_role that does not exist, takes no token of its own,
// or leads back to the role, and a role that others chain on losing its own token. Called under
// b.chainMu, so that no concurrent write closes a loop.
func (b *backend) checkChain(ctx context.Context, s logical.Storage, name string, role *roleEntry) error {
	if why := role.tokenless(); why != "" {
		users, err := b.dependents(ctx, s, name)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			field := "grant_type"
			if role.readerSupplied() {
				field = "subject_role"
			}
			return fieldErrorf(field, "role %q is the subject_role or actor_role of %s, so it needs a token of its own, but %s", name, strings.Join(users, ", "), why)
		}
	}
	for _, ref := range []struct{ field, role string }{{"subject_role", role.SubjectRole}, {"actor_role", role.ActorRole}} {
		if ref.role == "" {
			continue
		}
		target, err := b.role(ctx, s, ref.role)
		if err != nil {
			return err
		}
		switch {
		case ref.role == name:
			return fieldErrorf(ref.field, "a role cannot use its own token: %s -> %s", name, name)
		case target == nil:
			return fieldErrorf(ref.field, "role %q does not exist", ref.role)
		case target.tokenless() != "":
			return fieldErrorf(ref.field, "role %q has no token of its own: %s", ref.role, target.tokenless())
		}
		loop, err := b.findLoop(ctx, s, name, []string{name, ref.role})
		if err != nil {
			return err
		}
		if loop != nil {
			return fieldErrorf(ref.field, "%q would close a loop: %s", ref.role, strings.Join(loop, " -> "))
		}
	}
	return nil
}

// findLoop follows the subject and actor roles from the last role of path and returns the path
// that reaches name again, if one does.
func (b *backend) findLoop(ctx context.Context, s logical.Storage, name string, path []string) ([]string, error) {
	if len(path) > 64 {
		return nil, errors.New("the subject_role / actor_role chains are too long to check")
	}
	role, err := b.role(ctx, s, path[len(path)-1])
	if err != nil || role == nil {
		return nil, err
	}
	for _, next := range []string{role.SubjectRole, role.ActorRole} {
		switch next {
		case "":
		case name:
			return append(slices.Clip(path), next), nil
		default:
			if loop, err := b.findLoop(ctx, s, name, append(slices.Clip(path), next)); loop != nil || err != nil {
				return loop, err
			}
		}
	}
	return nil, nil
}

// dependents lists the roles that use name as their subject or actor role.
func (b *backend) dependents(ctx context.Context, s logical.Storage, name string) ([]string, error) {
	names, err := s.List(ctx, rolePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	var out []string
	for _, other := range names {
		role, err := b.role(ctx, s, other)
		if err != nil {
			return nil, err
		}
		if role != nil && (role.SubjectRole == name || role.ActorRole == name) {
			out = append(out, other)
		}
	}
	return out, nil
}

// withheld keeps a token that was sent out of an error: a provider's error_description may quote
// what it was sent, whole, clipped or in part (any 24 characters of it in a row are found).
func withheld(err error, token string) error {
	if token == "" || !quotes(err.Error(), token) {
		return err
	}
	var oe *oauthclient.Error
	if errors.As(err, &oe) {
		safe := *oe
		safe.Description, safe.Cause = "(withheld: it quoted a token sent)", ""
		return &safe
	}
	return errors.New("the token exchange failed (the error is withheld: it quoted a token sent)")
}

// quotes reports whether text holds token, or one of the 16-character stretches of it that start
// every 8 characters: a quote of 24 characters or more holds one.
func quotes(text, token string) bool {
	const window = 16
	if len(token) <= window {
		return strings.Contains(text, token)
	}
	for i := 0; i < len(token); i += window / 2 {
		if strings.Contains(text, token[min(i, len(token)-window):][:window]) {
			return true
		}
	}
	return false
}
