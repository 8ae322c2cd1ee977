package oauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

func pathAuthorize(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "authorize/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "authorize",
			OperationSuffix: "role",
		},
		Fields: map[string]*framework.FieldSchema{"name": nameField},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(operation("Start the authorization code flow of an authorization_code role, or the three-legged flow of an oauth1 role: the URL to open in a browser.", b.pathAuthorizeWrite, http.StatusOK, authorizeFields)),
		},
		HelpSynopsis:    pathAuthorizeHelpSyn,
		HelpDescription: pathAuthorizeHelpDesc,
	}
}

func pathCallback(b *backend) *framework.Path {
	read := operation("Complete an authorization from the browser the provider redirected (unauthenticated); answers an HTML page.", b.pathCallbackRead, http.StatusOK, nil)
	read.Responses[http.StatusOK][0].MediaType = "text/html"
	// The provider adds what it likes to the redirect (iss, scope, session_state, Google's
	// authuser and prompt): parameters the plugin does not use are ignored, not refused.
	read.Callback = b.pathCallbackRead
	write := operation("Complete an authorization with the code and state pasted from the redirect (JSON), or posted by the browser for response_mode=form_post (an HTML page).", b.pathCallbackWrite, http.StatusOK, callbackFields)
	write.Responses[http.StatusOK] = append(write.Responses[http.StatusOK], framework.Response{Description: "The page of a form_post completion.", MediaType: "text/html"})
	return &framework.Path{
		Pattern: "callback$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationSuffix: "authorization",
		},
		Fields: map[string]*framework.FieldSchema{
			"code":              {Type: framework.TypeString, Description: "The authorization code the provider issued. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
			"state":             {Type: framework.TypeString, Description: "The state authorize/<name> returned."},
			"iss":               {Type: framework.TypeString, Description: "The provider's issuer identifier, when it sends one (RFC 9207)."},
			"error":             {Type: framework.TypeString, Description: "The provider's error code, when the authorization failed."},
			"error_description": {Type: framework.TypeString, Description: "The provider's description of the error."},
			"oauth_token":       {Type: framework.TypeString, Description: "OAuth 1.0a: the temporary credentials the person authorized."},
			"oauth_verifier":    {Type: framework.TypeString, Description: "OAuth 1.0a: the verification code. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   named(forwarded(read), "complete", "authorization-in-browser"),
			logical.UpdateOperation: named(forwarded(write), "complete", "authorization"),
		},
		HelpSynopsis:    pathCallbackHelpSyn,
		HelpDescription: pathCallbackHelpDesc,
	}
}

func (b *backend) pathAuthorizeWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, false)
	if err != nil {
		return errorResponse(err)
	}
	name, role, cfg := target.name, target.role, target.cfg
	if role.GrantType == grantOAuth1 {
		return b.authorizeOAuth1(ctx, req.Storage, target)
	}
	if cfg == nil {
		return errorResponse(errNoConfig)
	}
	if role.GrantType != grantAuthorizationCode {
		return errorResponse(fieldErrorf("grant_type", "role %q performs the %s grant; authorize/<name> starts authorization_code roles", name, role.GrantType))
	}
	authURL := cfg.authorizationEndpoint()
	if authURL == "" {
		return errorResponse(fieldErrorf("auth_url", "the provider's authorization endpoint is unknown: write it to config auth_url, or configure an issuer that advertises one"))
	}
	creds := role.effectiveCredentials(cfg)
	state, err := randomToken()
	if err != nil {
		return nil, err
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	p := &pendingAuthorization{
		ID: id, Kind: kindCode, Incarnation: role.Incarnation, ExpiresAt: b.now().Add(authorizeTTL),
		StateDigest: digest(state),
		RedirectURI: firstNonEmpty(role.RedirectURI, cfg.RedirectURI),
		Verifier:    oauthclient.GenerateVerifier(),
	}
	if role.responseMode() == responseModeFormPost {
		p.ResponseMode = responseModeFormPost
	}
	if slices.Contains(role.Scopes, "openid") {
		if p.Nonce, err = randomToken(); err != nil {
			return nil, err
		}
	}
	if err := b.startPending(ctx, req.Storage, name, role, p); err != nil {
		return errorResponse(err)
	}
	u := oauthclient.AuthorizationRequest{
		AuthURL: authURL, ClientID: creds.ClientID, RedirectURI: p.RedirectURI, Scopes: role.Scopes,
		State: state, Verifier: p.Verifier, Nonce: p.Nonce, ResponseMode: p.ResponseMode, Params: role.AuthParams,
	}.URL()
	return &logical.Response{Data: map[string]any{
		"auth_url":   u,
		"state":      state,
		"expires_at": rfc3339(p.ExpiresAt),
	}}, nil
}

// startPending stores p as the role's authorization under way, if the role is still the one p
// was made for.
func (b *backend) startPending(ctx context.Context, s logical.Storage, name string, role *roleEntry, p *pendingAuthorization) error {
	current, unlock, err := b.lockRole(ctx, s, name)
	defer unlock()
	if err != nil {
		return err
	}
	if current == nil || current.Incarnation != role.Incarnation || current.GrantType != role.GrantType {
		return errStaleAuthorization
	}
	return b.replacePending(ctx, s, name, p)
}

// callbackError is a callback that completes nothing: a 400 (429 when rate-limited) whose
// message names no code, state or token.
type callbackError struct {
	status int
	msg    string
}

func (e *callbackError) Error() string { return e.msg }

func badCallback(format string, args ...any) error {
	return &callbackError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

var errUnknownState = badCallback("the state is unknown, was already used, or belongs to an authorization that was replaced: start again with authorize/<name>")

// completion is how far a callback got.
type completion struct {
	// role is the role the state named, if it named one.
	role string
	// formPost: the state named an authorization asked for with response_mode=form_post, so a
	// write to the callback is the browser's post of the provider's form, not a pasted code.
	formPost bool
	authz    *authorization
}

// complete finishes the authorization code flow the state names. The state is used up first,
// so that it works once whatever follows. get marks the browser's redirect; the browser's form
// post (formPost) counts as one too: either must carry iss when the provider promises it. A
// pasted code is checked against an iss only when one is pasted with it.
func (b *backend) complete(ctx context.Context, s logical.Storage, d *framework.FieldData, get bool) (completion, error) {
	if _, ok := d.GetOk("oauth_token"); ok {
		name, authz, err := b.completeOAuth1(ctx, s, d)
		return completion{role: name, authz: authz}, err
	}
	state := d.Get("state").(string)
	if state == "" {
		return completion{}, badCallback("state is missing")
	}
	if len(state) > 512 {
		return completion{}, errUnknownState
	}
	name, p, err := b.consumeState(ctx, s, digest(state), kindCode)
	c := completion{role: name, formPost: p != nil && p.ResponseMode == responseModeFormPost}
	if err != nil {
		return c, err
	}
	if code := d.Get("error").(string); code != "" {
		return c, badCallback("the provider did not authorize role %q: error=%q error_description=%q", name, clipInput(code), clipInput(d.Get("error_description").(string)))
	}
	code := d.Get("code").(string)
	if code == "" || len(code) > maxFieldBytes {
		return c, badCallback("code is missing")
	}
	role, err := b.role(ctx, s, name)
	if err != nil {
		return c, err
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return c, err
	}
	if role == nil || cfg == nil || role.Incarnation != p.Incarnation || role.GrantType != grantAuthorizationCode {
		return c, errStaleAuthorization
	}
	if err := checkIssuer(d, cfg, get || c.formPost); err != nil {
		return c, err
	}
	before := bindingOf(role, cfg)
	sent, took := b.now(), time.Now()
	tok, err := withSecretNext(ctx, b, s, name, cfg, role, func(client *oauthclient.Client, tr oauthclient.TokenRequest) (*oauthclient.Token, error) {
		tr.GrantType = oauthclient.GrantAuthorizationCode
		tr.Scopes = nil // RFC 6749 §4.1.3: the code carries the scope
		tr.Params.Set("code", code)
		tr.Params.Set("redirect_uri", p.RedirectURI)
		tr.Params.Set("code_verifier", p.Verifier)
		return client.Exchange(ctx, tr)
	})
	b.metrics.observeGrant(roleLabel(name, cfg), role.GrantType, time.Since(took), err)
	if err != nil {
		return c, badCallback("exchanging the code for role %q failed: %v", name, err)
	}
	c.authz, err = b.authorized(ctx, s, name, role, cfg, before, tok, p.Nonce, sent, func() error { return nil })
	return c, err
}

// authorized checks and stores the tokens a person's authorization of the role gave.
func (b *backend) authorized(ctx context.Context, s logical.Storage, name string, role *roleEntry, cfg *configEntry, before tokenBinding, tok *oauthclient.Token, nonce string, sent time.Time, check func() error) (*authorization, error) {
	if tok.RefreshToken == "" {
		return nil, badCallback("the provider issued no refresh token for role %q, so the role could not keep its token alive; nothing was stored. "+
			"Ask for offline access: a scope such as offline_access, or auth_params such as access_type=offline,prompt=consent (Google)", name)
	}
	sub, err := checkIDToken(tok.IDToken, cfg, role.effectiveCredentials(cfg).ClientID, nonce)
	if err != nil {
		return nil, badCallback("role %q: %v; nothing was stored", name, err)
	}
	authz, err := b.completeAuthorization(ctx, s, name, before, tok, sub, sent, check)
	if errors.Is(err, errStaleAuthorization) {
		return nil, badCallback("%v", err)
	}
	return authz, err
}

// consumeState uses up the state's pending authorization and returns it with its role; an
// expired one is returned with the error, so that the answer can take the form it expects.
func (b *backend) consumeState(ctx context.Context, s logical.Storage, digest, kind string) (string, *pendingAuthorization, error) {
	se, err := readEntry[stateEntry](ctx, s, statePrefix+digest)
	if err != nil {
		return "", nil, err
	}
	if se == nil {
		return "", nil, errUnknownState
	}
	name := se.Role
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()
	p, err := b.pending(ctx, s, name)
	if err != nil {
		return name, nil, err
	}
	if p == nil || p.Kind != kind || p.StateDigest != digest {
		return name, nil, errUnknownState
	}
	if !b.now().Before(p.ExpiresAt) {
		// Kept, so that the role's status says expired; a new authorize replaces it.
		return name, p, badCallback("the authorization of role %q expired at %s: start again with authorize/%s", name, rfc3339(p.ExpiresAt), name)
	}
	if err := b.dropPending(ctx, s, name); err != nil {
		return name, nil, err
	}
	return name, p, nil
}

// checkIssuer is RFC 9207: the iss of the authorization response must be the provider's, and a
// browser's redirect must carry it when the provider's metadata promises it. (A mount has one
// provider, whose token endpoint alone ever sees a code: this is defence in depth against a
// mix-up, not the only line.)
func checkIssuer(d *framework.FieldData, cfg *configEntry, required bool) error {
	iss, sent := d.GetOk("iss")
	md := cfg.discovered()
	switch {
	case sent && iss.(string) != firstNonEmpty(md.Issuer, cfg.Issuer):
		return badCallback("the authorization response comes from issuer %q, not the configured provider (RFC 9207): nothing was stored", clipInput(iss.(string)))
	case !sent && required && md.AuthorizationResponseIssParameterSupported:
		return badCallback("the authorization response has no iss, which the provider's metadata promises (RFC 9207): nothing was stored")
	}
	return nil
}

// completeLimited is complete behind the rate limit of failed callbacks. The whole path is
// unauthenticated (Vault's Unauthenticated covers every operation of a path), so a pasted code
// counts as a browser's does.
func (b *backend) completeLimited(ctx context.Context, s logical.Storage, d *framework.FieldData, get bool) (completion, error) {
	now := b.now()
	if !b.callbacks.allow(now) {
		return completion{}, &callbackError{status: http.StatusTooManyRequests, msg: "too many callbacks failed recently: wait a minute, then start again"}
	}
	c, err := b.complete(ctx, s, d, get)
	if err != nil {
		b.callbacks.fail(now)
	}
	return c, err
}

// pathCallbackWrite answers the browser's form post (response_mode=form_post) with the page a
// GET gets, and a pasted code with JSON. A state that names no authorization (unknown, spent,
// replaced), or a callback refused by the rate limit before any state is looked up, cannot
// tell which it is: it answers JSON.
func (b *backend) pathCallbackWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	c, err := b.completeLimited(ctx, req.Storage, d, false)
	if c.formPost {
		return b.callbackAnswerPage(c, err), nil
	}
	if ce := (*callbackError)(nil); errors.As(err, &ce) {
		if ce.status == http.StatusTooManyRequests {
			return logical.RespondWithStatusCode(logical.ErrorResponse(ce.msg), req, ce.status)
		}
		return logical.ErrorResponse(ce.msg), nil
	}
	if err != nil {
		return nil, err
	}
	data := map[string]any{"role": c.role, "authorized_at": rfc3339(c.authz.AuthorizedAt)}
	if c.authz.Subject != "" {
		data["sub"] = c.authz.Subject
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathCallbackRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	c, err := b.completeLimited(ctx, req.Storage, d, true)
	return b.callbackAnswerPage(c, err), nil
}

// callbackAnswerPage is the browser's page on how its callback went.
func (b *backend) callbackAnswerPage(c completion, err error) *logical.Response {
	var ce *callbackError
	switch {
	case errors.As(err, &ce) && ce.status == http.StatusTooManyRequests:
		return callbackPage(ce.status, "Too many failed attempts", ce.msg)
	case errors.As(err, &ce):
		return callbackPage(ce.status, "Authorization failed", ce.msg)
	case err != nil:
		b.Logger().Error("completing an authorization failed", "role", c.role, "error", err)
		return callbackPage(http.StatusInternalServerError, "Authorization failed", "Vault could not complete the authorization; its log says why.")
	}
	return callbackPage(http.StatusOK, "Authorized", fmt.Sprintf("Vault's role %q is now connected. You can close this window.", c.role))
}

// callbackPageTemplate is self-contained: no script, style sheet, image or font is loaded, and
// its Content-Security-Policy says so (Vault passes no CSP header of a plugin's on).
var callbackPageTemplate = template.Must(template.New("callback").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} - Vault</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#1f2328}h1{font-size:1.4em}</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
</body>
</html>
`))

// callbackPage is a raw HTML answer for the browser.
func callbackPage(status int, title, message string) *logical.Response {
	var buf bytes.Buffer
	// Executing a parsed template into memory fails only on a bad template, which Must caught.
	_ = callbackPageTemplate.Execute(&buf, struct{ Title, Message string }{title, message})
	return &logical.Response{Data: map[string]any{
		logical.HTTPStatusCode:  status,
		logical.HTTPContentType: "text/html; charset=utf-8",
		logical.HTTPRawBody:     buf.Bytes(),
	}}
}

var authorizeFields = map[string]*framework.FieldSchema{
	"auth_url":   {Type: framework.TypeString, Description: "The provider's authorization URL to open in a browser (state, PKCE challenge and nonce included)."},
	"state":      {Type: framework.TypeString, Description: "The state of this authorization: single use, bound to the role and redirect URI."},
	"expires_at": {Type: framework.TypeString, Description: "When the authorization must be completed by (RFC 3339)."},
}

var callbackFields = map[string]*framework.FieldSchema{
	"role":          {Type: framework.TypeString, Description: "The role now authorized."},
	"authorized_at": {Type: framework.TypeString, Description: "When (RFC 3339)."},
	"sub":           {Type: framework.TypeString, Description: "The sub of the ID token, when one came back."},
}

const pathAuthorizeHelpSyn = `Start the authorization code flow (with PKCE) of an authorization_code role.`

const pathAuthorizeHelpDesc = `
Returns auth_url, the provider's authorization endpoint with response_type=code, the client_id,
the redirect_uri, the scope, a state, a PKCE S256 code_challenge, a nonce when the scopes include
openid, the role's auth_params, and response_mode=form_post when the role sets it. Open it in a browser and sign in; the provider redirects to
the redirect URI with a code and the state. If that is Vault's callback path
(https://<vault>/v1/<mount>/callback), the role is authorized at once; otherwise paste code and
state into "vault write <mount>/callback code=... state=...".

For an oauth1 role with request_token_url, it obtains OAuth 1.0a temporary credentials (with
oauth_callback set to the redirect URI, or "oob") and answers the authorize_url to open; the
callback then brings oauth_token and oauth_verifier, and the token credentials are stored on the
role.

The state is 256 random bits, works once, for this role and redirect URI only, and expires after
10 minutes. A new authorize for the role replaces the pending one. After the authorization the
role lives on the refresh token it gave, exactly as a refresh_token role does; authorizing an
authorized role again replaces its refresh token only when the new authorization succeeds.
`

const pathCallbackHelpSyn = `Complete an authorization code flow.`

const pathCallbackHelpDesc = `
The provider redirects the browser here (GET, unauthenticated: register
https://<vault>/v1/<mount>/callback as the redirect URI) with code and state, or with error and
error_description. The plugin checks the state (known, unexpired, unused), checks iss when the
provider sends it (RFC 9207; a pasted code may omit it), exchanges the code with the PKCE verifier, and answers a small HTML
page naming the role now connected. With the role's response_mode=form_post the browser POSTs
the same parameters as a form instead, which keeps them out of the request_uri that Vault's
audit log writes in clear, and gets the same page. A write with code and state for a role in
query mode is a code pasted by hand (a redirect URI that is not Vault) and answers JSON; so does
a write whose state names no pending authorization. All need no Vault token: the pending state
is what authorizes a completion. OAuth 1.0a roles complete with oauth_token and oauth_verifier
instead of code and state.

An unknown, expired, replayed or replaced state, a provider error, a refused code or a token
response without a refresh token is a 400 and changes nothing. Failed callbacks are
rate-limited (429).
`
