package testprovider

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// RFC 8693 §3 token type identifiers the provider takes and issues.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// ExchangePolicy is what the token exchange grant (RFC 8693) allows one client.
type ExchangePolicy struct {
	// Audiences the client may ask for; empty allows any.
	Audiences []string
	// Scopes the client may ask for; empty allows any.
	Scopes []string
	// AcceptSubject, when set, takes subject tokens the provider did not issue (say, a JWT of
	// another issuer) and names their subject; nil refuses them.
	AcceptSubject func(token, tokenType string) (subject string, ok bool)
}

// AllowExchange lets a client use the token exchange grant under policy.
func (p *Provider) AllowExchange(clientID string, policy ExchangePolicy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exchange == nil {
		p.exchange = map[string]ExchangePolicy{}
	}
	p.exchange[clientID] = policy
}

// Exchanges is how many token exchange requests the provider answered with a token.
func (p *Provider) Exchanges() int64 { return p.exchanges.Load() }

// exchangeGrant checks an RFC 8693 request: an active subject token (and actor token, when
// sent) and an allowed audience and scope. The issued token's subject is the subject token's.
func (p *Provider) exchangeGrant(client *Client, r *http.Request) (string, *oauthError) {
	form := r.PostForm
	p.mu.Lock()
	defer p.mu.Unlock()
	policy, ok := p.exchange[client.ID]
	if !ok {
		return "", &oauthError{"unauthorized_client", "client may not exchange tokens"}
	}
	subject, oerr := p.checkTokenLocked(policy, form.Get("subject_token"), form.Get("subject_token_type"), "subject")
	if oerr != nil {
		return "", oerr
	}
	if form.Has("actor_token") {
		if _, oerr := p.checkTokenLocked(policy, form.Get("actor_token"), form.Get("actor_token_type"), "actor"); oerr != nil {
			return "", oerr
		}
	}
	if rt := form.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken && rt != TokenTypeJWT {
		return "", &oauthError{"invalid_request", "requested_token_type is not supported"}
	}
	for _, aud := range form["audience"] {
		if len(policy.Audiences) > 0 && !slices.Contains(policy.Audiences, aud) {
			return "", &oauthError{"invalid_target", "audience is not allowed"}
		}
	}
	for _, s := range strings.Fields(form.Get("scope")) {
		if len(policy.Scopes) > 0 && !slices.Contains(policy.Scopes, s) {
			return "", &oauthError{"invalid_scope", "scope is not allowed"}
		}
	}
	p.exchanges.Add(1)
	return subject, nil
}

// checkTokenLocked names the subject of an active token of the given type. Called under p.mu.
func (p *Provider) checkTokenLocked(policy ExchangePolicy, token, tokenType, which string) (string, *oauthError) {
	if token == "" || tokenType == "" {
		return "", &oauthError{"invalid_request", which + "_token and " + which + "_token_type are required"}
	}
	if it, ok := p.issued[token]; ok && tokenType == TokenTypeAccessToken {
		if it.Revoked || !time.Now().Before(it.ExpiresAt) {
			return "", &oauthError{"invalid_grant", which + " token is not active"}
		}
		return it.Subject, nil
	}
	if policy.AcceptSubject != nil {
		if subject, ok := policy.AcceptSubject(token, tokenType); ok {
			return subject, nil
		}
	}
	return "", &oauthError{"invalid_grant", which + " token is not valid"}
}
