package testprovider

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const grantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

// codeGrant is an authorization code the authorization endpoint issued.
type codeGrant struct {
	clientID, redirectURI, challenge, scope, nonce, subject string
}

// deviceGrant is a device authorization the test approves, denies, slows down or expires.
type deviceGrant struct {
	clientID, userCode, scope, subject string
	denied, expired, slowDown          bool
	expiresAt                          time.Time
}

// authorize is the authorization endpoint (RFC 6749 §4.1.1, RFC 7636): it signs
// AuthorizeSubject in and consents at once, and redirects back with a code, or with
// AuthorizeError; with response_mode=form_post it answers a page whose form posts them to the
// redirect URI instead (OAuth 2.0 Form Post Response Mode). A redirect URI that is not
// registered exactly gets no redirect (§4.1.2.1).
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := p.client(q.Get("client_id"))
	if c == nil || !slices.Contains(c.RedirectURIs, q.Get("redirect_uri")) {
		http.Error(w, "unknown client or unregistered redirect_uri", http.StatusBadRequest)
		return
	}
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	params := url.Values{}
	params.Set("state", q.Get("state"))
	if p.SendIss {
		params.Set("iss", p.URL)
	}
	p.mu.Lock()
	denied := p.AuthorizeError
	subject := p.AuthorizeSubject
	p.mu.Unlock()
	switch {
	case q.Get("response_type") != "code":
		params.Set("error", "unsupported_response_type")
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		params.Set("error", "invalid_request")
		params.Set("error_description", "PKCE S256 is required")
	case denied != "":
		params.Set("error", denied)
		params.Set("error_description", "The <b>user</b> said no")
	default:
		code := randomToken()
		p.mu.Lock()
		p.codes[code] = &codeGrant{clientID: c.ID, redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge"),
			scope: q.Get("scope"), nonce: q.Get("nonce"), subject: subject}
		p.mu.Unlock()
		params.Set("code", code)
	}
	if q.Get("response_mode") == "form_post" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = formPostPage.Execute(w, struct {
			Action string
			Params url.Values
		}{q.Get("redirect_uri"), params})
		return
	}
	query := back.Query()
	for k, v := range params {
		query[k] = v
	}
	back.RawQuery = query.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// formPostPage is the auto-submitting form of the form_post response mode.
var formPostPage = template.Must(template.New("form_post").Parse(`<!DOCTYPE html>
<html><head><title>Submit</title></head>
<body onload="document.forms[0].submit()">
<form method="post" action="{{.Action}}">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{index $v 0}}">
{{end}}</form>
</body></html>
`))

// codeGrant redeems an authorization code once, for its client and redirect URI, with the
// PKCE verifier of its challenge.
func (p *Provider) codeGrant(client *Client, r *http.Request) (subject, scope, nonce string, oerr *oauthError) {
	p.mu.Lock()
	defer p.mu.Unlock()
	code := r.PostForm.Get("code")
	g, ok := p.codes[code]
	delete(p.codes, code)
	switch {
	case !ok || g.clientID != client.ID:
		return "", "", "", &oauthError{"invalid_grant", "code is invalid, expired or already used"}
	case g.redirectURI != r.PostForm.Get("redirect_uri"):
		return "", "", "", &oauthError{"invalid_grant", "redirect_uri does not match"}
	case s256(r.PostForm.Get("code_verifier")) != g.challenge:
		return "", "", "", &oauthError{"invalid_grant", "PKCE verification failed"}
	}
	return g.subject, g.scope, g.nonce, nil
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// deviceAuthorization is RFC 8628 §3.1–3.2 for an authenticated client.
func (p *Provider) deviceAuthorization(w http.ResponseWriter, r *http.Request) {
	if p.Intercept != nil && p.Intercept(w, r) {
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "form does not parse")
		return
	}
	client, oerr := p.authenticate(r)
	if oerr != nil {
		writeError(w, http.StatusUnauthorized, "invalid_client", oerr.desc)
		return
	}
	deviceCode, userCode := randomToken(), randomToken()[:8]
	p.mu.Lock()
	p.devices[deviceCode] = &deviceGrant{clientID: client.ID, userCode: userCode, scope: r.PostForm.Get("scope"), expiresAt: time.Now().Add(p.DeviceTTL)}
	interval, ttl := p.DeviceInterval, p.DeviceTTL
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code":               deviceCode,
		"user_code":                 userCode,
		"verification_uri":          p.URL + "/device",
		"verification_uri_complete": p.URL + "/device?user_code=" + userCode,
		"expires_in":                int(ttl.Seconds()),
		"interval":                  int(interval.Seconds()),
	})
}

// deviceGrant answers a device access token request (RFC 8628 §3.4–3.5).
func (p *Provider) deviceGrant(client *Client, r *http.Request) (subject, scope string, oerr *oauthError) {
	p.mu.Lock()
	defer p.mu.Unlock()
	code := r.PostForm.Get("device_code")
	g, ok := p.devices[code]
	switch {
	case !ok || g.clientID != client.ID:
		return "", "", &oauthError{"invalid_grant", "device_code is unknown"}
	case g.slowDown:
		g.slowDown = false
		return "", "", &oauthError{"slow_down", "polling too fast"}
	case g.denied:
		return "", "", &oauthError{"access_denied", "the user denied the request"}
	case g.expired || time.Now().After(g.expiresAt):
		return "", "", &oauthError{"expired_token", "the device code expired"}
	case g.subject == "":
		return "", "", &oauthError{"authorization_pending", "waiting for the user"}
	}
	delete(p.devices, code)
	return g.subject, g.scope, nil
}

// device finds the device authorization of a user code.
func (p *Provider) device(userCode string, f func(*deviceGrant)) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.devices {
		if g.userCode == userCode {
			f(g)
			return true
		}
	}
	return false
}

// ApproveDevice approves the user code's device authorization as subject.
func (p *Provider) ApproveDevice(userCode, subject string) bool {
	return p.device(userCode, func(g *deviceGrant) { g.subject = subject })
}

// DenyDevice denies the user code's device authorization.
func (p *Provider) DenyDevice(userCode string) bool {
	return p.device(userCode, func(g *deviceGrant) { g.denied = true })
}

// SlowDownDevice makes the next poll of the user code's device authorization answer slow_down.
func (p *Provider) SlowDownDevice(userCode string) bool {
	return p.device(userCode, func(g *deviceGrant) { g.slowDown = true })
}

// ExpireDevice expires the user code's device authorization.
func (p *Provider) ExpireDevice(userCode string) bool {
	return p.device(userCode, func(g *deviceGrant) { g.expired = true })
}

// idTokenKey signs ID tokens; the broker does not verify their signature (OIDC Core §3.1.3.7).
var idTokenKey = []byte("testprovider-id-token-signing-key-0123456789")

func (p *Provider) idToken(clientID, subject, nonce string) string {
	now := time.Now()
	claims := map[string]any{"iss": p.URL, "aud": clientID, "sub": subject, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	if p.IDTokenClaims != nil {
		p.IDTokenClaims(claims)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: idTokenKey}, nil)
	if err != nil {
		panic(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		panic(err)
	}
	return raw
}
