package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
)

// Grant type URIs of the user-delegated grants (RFC 6749 §4.1.3, RFC 8628 §3.4).
const (
	GrantAuthorizationCode = "authorization_code"
	GrantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// AuthorizationRequest is the front-channel request of the authorization code grant (RFC 6749
// §4.1.1) with PKCE (RFC 7636).
type AuthorizationRequest struct {
	AuthURL     string
	ClientID    string
	RedirectURI string
	Scopes      []string
	State       string
	// Verifier is the PKCE code verifier; only its S256 challenge goes into the URL.
	Verifier string
	// Nonce is sent when not empty (OpenID Connect Core §3.1.2.1).
	Nonce string
	// ResponseMode is sent when not empty: form_post makes the provider's answer a form the
	// browser posts to the redirect URI (OAuth 2.0 Form Post Response Mode).
	ResponseMode string
	// Params are extra parameters (access_type=offline, prompt=consent, ...).
	Params map[string]string
}

// GenerateVerifier returns a PKCE code verifier of 256 random bits (RFC 7636 §4.1).
func GenerateVerifier() string { return oauth2.GenerateVerifier() }

// URL is where the user's browser is sent.
func (r AuthorizationRequest) URL() string {
	conf := &oauth2.Config{
		ClientID:    r.ClientID,
		RedirectURL: r.RedirectURI,
		Scopes:      r.Scopes,
		Endpoint:    oauth2.Endpoint{AuthURL: r.AuthURL},
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(r.Verifier)}
	if r.Nonce != "" {
		opts = append(opts, oauth2.SetAuthURLParam("nonce", r.Nonce))
	}
	if r.ResponseMode != "" {
		opts = append(opts, oauth2.SetAuthURLParam("response_mode", r.ResponseMode))
	}
	for k, v := range r.Params {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	return conf.AuthCodeURL(r.State, opts...)
}

// DeviceAuthRequest is a device authorization request (RFC 8628 §3.1).
type DeviceAuthRequest struct {
	URL    string
	Scopes []string
	Params url.Values
	Auth   ClientAuth
	// Audience is the aud of a JWT client assertion: the token endpoint, as for token requests.
	Audience string
}

// DeviceAuthorization is the device authorization response (RFC 8628 §3.2).
type DeviceAuthorization struct {
	DeviceCode              string
	UserCode                string
	VerificationURI         string
	VerificationURIComplete string
	ExpiresIn               time.Duration
	Interval                time.Duration
}

// deviceDefaultInterval is RFC 8628 §3.2's default polling interval.
const deviceDefaultInterval = 5 * time.Second

// DeviceAuth starts a device authorization. x/oauth2's Config.DeviceAuth cannot authenticate a
// confidential client (it sends only client_id), and RFC 8628 §3.1 requires the client to
// authenticate as at the token endpoint; so the request is made here, with the client
// authentication of token requests.
func (c *Client) DeviceAuth(ctx context.Context, req DeviceAuthRequest) (*DeviceAuthorization, error) {
	const what = "device authorization request"
	form := url.Values{}
	for k, v := range req.Params {
		form[k] = append([]string(nil), v...)
	}
	if len(req.Scopes) > 0 {
		form.Set("scope", strings.Join(req.Scopes, " "))
	}
	resp, err := c.postForm(ctx, what, req.URL, form, req.Auth, firstOf(req.Audience, req.URL))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return nil, &Error{Request: what, Cause: fmt.Sprintf("no answer from %s in time", hostOf(req.URL)), kind: KindTimeout}
	}
	var out struct {
		DeviceCode              string      `json:"device_code"`
		UserCode                string      `json:"user_code"`
		VerificationURI         string      `json:"verification_uri"`
		VerificationURL         string      `json:"verification_url"` // Google's spelling
		VerificationURIComplete string      `json:"verification_uri_complete"`
		ExpiresIn               json.Number `json:"expires_in"`
		Interval                json.Number `json:"interval"`
		Error                   string      `json:"error"`
		ErrorDescription        string      `json:"error_description"`
	}
	decodeErr := json.Unmarshal(body, &out)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Request: what, Code: clip(out.Error, 64), Description: clip(out.ErrorDescription, maxDescription)}
		e.setStatus(resp)
		return nil, e
	}
	if decodeErr != nil {
		return nil, &Error{Request: what, Cause: "invalid device authorization response: not JSON", kind: KindInvalidResponse}
	}
	da := &DeviceAuthorization{
		DeviceCode:              out.DeviceCode,
		UserCode:                out.UserCode,
		VerificationURI:         firstOf(out.VerificationURI, out.VerificationURL),
		VerificationURIComplete: out.VerificationURIComplete,
		Interval:                deviceDefaultInterval,
	}
	if secs, err := out.ExpiresIn.Int64(); err == nil && secs > 0 {
		da.ExpiresIn = time.Duration(secs) * time.Second
	}
	if secs, err := out.Interval.Int64(); err == nil && secs > 0 {
		da.Interval = time.Duration(secs) * time.Second
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" || da.ExpiresIn == 0 {
		return nil, &Error{Request: what, Cause: "invalid device authorization response: device_code, user_code, verification_uri and expires_in are required (RFC 8628 §3.2)", kind: KindInvalidResponse}
	}
	return da, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// IDClaims are the ID token claims the broker checks and keeps.
type IDClaims struct {
	Issuer   string
	Audience []string
	Subject  string
	Nonce    string
}

// ParseIDToken reads an ID token's claims without verifying its signature: the broker takes it
// straight from the token endpoint over TLS, which OpenID Connect Core §3.1.3.7 (item 6) accepts
// in place of checking the signature. The caller checks iss, aud and nonce.
func ParseIDToken(raw string) (*IDClaims, error) {
	tok, err := jwt.ParseSigned(raw, idTokenAlgs)
	if err != nil {
		return nil, errors.New("the ID token is not a signed JWT")
	}
	var claims struct {
		jwt.Claims
		Nonce string `json:"nonce"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return nil, errors.New("the ID token's claims do not parse")
	}
	return &IDClaims{Issuer: claims.Issuer, Audience: claims.Audience, Subject: claims.Subject, Nonce: claims.Nonce}, nil
}

var idTokenAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.HS256, jose.HS384, jose.HS512}
