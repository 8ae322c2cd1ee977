// Package oauthclient performs OAuth 2.0 token requests (RFC 6749 and its extensions) and knows
// nothing of Vault: it turns a TokenRequest into a Token or an *Error that is safe to show.
package oauthclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// MaxResponseBytes caps what is read of any provider response; a token response is a few KiB.
const MaxResponseBytes = 1 << 20

// Grant type URIs (RFC 6749 §4, RFC 7523 §2.1, RFC 8628 §3.4, RFC 8693 §2.1).
const (
	GrantClientCredentials = "client_credentials"
	GrantPassword          = "password"
	GrantRefreshToken      = "refresh_token"
	GrantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// TokenRequest is one request to a token endpoint.
type TokenRequest struct {
	TokenURL  string
	GrantType string
	// Params holds the grant's inputs and any extra parameters (audience, resource, ...).
	Params url.Values
	Scopes []string
	Auth   ClientAuth
	// DPoP, when set, binds the token to a key: every request carries a proof.
	DPoP *DPoP
}

// Token is a successful token response.
type Token struct {
	AccessToken  string
	TokenType    string
	RefreshToken string
	IDToken      string
	Scope        string
	// ExpiresIn is zero when the provider sent no (or no usable) expires_in.
	ExpiresIn time.Duration
	// IssuedTokenType is RFC 8693's issued_token_type: what a token exchange issued.
	IssuedTokenType string
}

// Client sends token requests with one HTTP client (its TLS roots and timeout, and the client
// certificate it presents, if any).
type Client struct {
	http *http.Client
	now  func() time.Time
	cert *tls.Certificate
}

// NewClient returns a Client whose requests trust only caPEM when it is set (else the system
// roots) and end after timeout, body included.
func NewClient(caPEM string, timeout time.Duration) (*Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != "" {
		pool, err := ParseCAPEM(caPEM)
		if err != nil {
			return nil, err
		}
		transport.TLSClientConfig.RootCAs = pool
	}
	return &Client{
		http: &http.Client{
			Timeout:   timeout,
			Transport: acceptJSON{transport},
			// A token endpoint that redirects is misconfigured; following it would resend
			// credentials to wherever it points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
	}, nil
}

// WithCertificate returns a client like c that presents cert in its TLS handshakes (RFC 8705
// mutual TLS client authentication), with connections of its own.
func (c *Client) WithCertificate(cert *tls.Certificate) (*Client, error) {
	aj, ok := c.http.Transport.(acceptJSON)
	if !ok {
		return nil, errors.New("this client cannot present a certificate")
	}
	base, ok := aj.next.(*http.Transport)
	if !ok {
		return nil, errors.New("this client cannot present a certificate")
	}
	transport := base.Clone()
	// Presented whatever CAs the server lists as acceptable: a self-signed certificate (RFC 8705
	// §2.2) is never issued by one of them, and crypto/tls would otherwise send none.
	transport.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	hc := *c.http
	hc.Transport = acceptJSON{transport}
	return &Client{http: &hc, now: c.now, cert: cert}, nil
}

// ParseCAPEM returns the pool of the PEM certificates in caPEM; an error when there are none.
func ParseCAPEM(caPEM string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, errors.New("ca_pem holds no PEM certificate")
	}
	return pool, nil
}

// acceptJSON asks for JSON: some providers answer form-encoded unless asked.
type acceptJSON struct{ next http.RoundTripper }

func (a acceptJSON) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Accept", "application/json")
	return a.next.RoundTrip(req)
}

// Exchange performs the token request. Errors are *Error values that carry no secret. A DPoP
// request the server answers with use_dpop_nonce and a new nonce is sent again, once, with it
// (RFC 9449 §8).
func (c *Client) Exchange(ctx context.Context, req TokenRequest) (*Token, error) {
	httpClient := c.http
	var dpop *dpopTransport
	if req.DPoP != nil {
		dpop = &dpopTransport{next: c.http.Transport, dpop: req.DPoP, nonce: req.DPoP.Nonce}
		withProofs := *c.http
		withProofs.Transport = dpop
		httpClient = &withProofs
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, httpClient)
	tok, err := c.exchange(ctx, req)
	if e := (*Error)(nil); errors.As(err, &e) && e.Code == "use_dpop_nonce" && dpop != nil && dpop.renewed {
		tok, err = c.exchange(ctx, req)
	}
	return tok, err
}

// exchange sends the token request once, with the HTTP client ctx carries.
func (c *Client) exchange(ctx context.Context, req TokenRequest) (*Token, error) {
	params := url.Values{}
	for k, v := range req.Params {
		params[k] = append([]string(nil), v...)
	}
	// clientcredentials.Config lets grant_type be overridden, which makes it a generic token
	// request with x/oauth2's response and error parsing.
	params.Set("grant_type", req.GrantType)
	if req.Auth.Certificate != nil && (c.cert == nil || !bytes.Equal(c.cert.Certificate[0], req.Auth.Certificate.Certificate[0])) {
		return nil, &Error{Cause: "mutual TLS client authentication needs the client made for its certificate"}
	}
	authParams, err := req.Auth.params(req.TokenURL, c.now())
	if err != nil {
		return nil, &Error{Cause: err.Error()}
	}
	for k, v := range authParams {
		params[k] = v
	}
	conf := &clientcredentials.Config{
		ClientID:       req.Auth.ClientID,
		TokenURL:       req.TokenURL,
		Scopes:         req.Scopes,
		EndpointParams: params,
		AuthStyle:      req.Auth.style(),
	}
	if req.Auth.sendsSecret() {
		conf.ClientSecret = req.Auth.ClientSecret
	}
	if conf.AuthStyle == oauth2.AuthStyleInParams && !req.Auth.sendsSecret() {
		// Public clients and JWT-authenticated clients identify themselves in the body.
		conf.ClientID = ""
		params.Set("client_id", req.Auth.ClientID)
	}
	tok, err := conf.Token(ctx)
	if err != nil {
		return nil, toError(err, req.TokenURL)
	}
	return fromOAuth2(tok)
}

func fromOAuth2(tok *oauth2.Token) (*Token, error) {
	expiresIn, err := expiresIn(tok)
	if err != nil {
		return nil, &Error{Cause: "invalid token response: " + err.Error(), kind: KindInvalidResponse}
	}
	return &Token{
		AccessToken:     tok.AccessToken,
		TokenType:       normalizeTokenType(tok.TokenType),
		RefreshToken:    tok.RefreshToken,
		IDToken:         extraString(tok, "id_token"),
		Scope:           extraString(tok, "scope"),
		ExpiresIn:       expiresIn,
		IssuedTokenType: extraString(tok, "issued_token_type"),
	}, nil
}

// expiresIn is the lifetime the provider sent, counted by the caller from when it sent the
// request (x/oauth2's Expiry counts from the answer's arrival, which a slow answer inflates).
// Zero means none was sent; one that is not a positive number makes the response unusable.
func expiresIn(tok *oauth2.Token) (time.Duration, error) {
	var secs float64
	switch v := tok.Extra("expires_in").(type) {
	case nil:
		return 0, nil
	case float64:
		secs = v
	case int64:
		secs = float64(v)
	case string:
		if strings.TrimSpace(v) == "" {
			return 0, nil
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, fmt.Errorf("expires_in %q is not a number", clip(v, 32))
		}
		secs = f
	default:
		return 0, errors.New("expires_in is not a number")
	}
	if secs < 1 {
		return 0, fmt.Errorf("expires_in is %v: a token must live at least a second", secs)
	}
	// x/oauth2 caps expires_in at 2^31-1 seconds too.
	return time.Duration(min(secs, math.MaxInt32)) * time.Second, nil
}

// normalizeTokenType maps "bearer" (as some providers send it) and a missing type to "Bearer",
// and "dpop" to "DPoP" (RFC 6750 §4, RFC 9449 §5: the type is case insensitive).
func normalizeTokenType(t string) string {
	switch {
	case t == "" || strings.EqualFold(t, "bearer"):
		return "Bearer"
	case strings.EqualFold(t, "dpop"):
		return "DPoP"
	}
	return t
}

func extraString(tok *oauth2.Token, key string) string {
	s, _ := tok.Extra(key).(string)
	return s
}

// hostOf names a URL by scheme and host only, so an error never repeats a query string.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the token endpoint"
	}
	return fmt.Sprintf("%s://%s", u.Scheme, u.Host)
}
