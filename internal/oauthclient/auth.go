package oauthclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// Client authentication methods (RFC 8414 / OIDC Core §9 names).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthClientSecretJWT   = "client_secret_jwt"
	AuthPrivateKeyJWT     = "private_key_jwt"
	AuthNone              = "none"
	// RFC 8705 §2: mutual TLS with a PKI certificate or a self-signed one.
	AuthTLSClientAuth           = "tls_client_auth"
	AuthSelfSignedTLSClientAuth = "self_signed_tls_client_auth"
)

// AuthMethods lists the supported methods, in the order of preference used when choosing from a
// provider's token_endpoint_auth_methods_supported.
var AuthMethods = []string{AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT, AuthTLSClientAuth, AuthSelfSignedTLSClientAuth, AuthClientSecretJWT, AuthNone}

// IsMTLS reports whether method authenticates the client with its TLS certificate.
func IsMTLS(method string) bool {
	return method == AuthTLSClientAuth || method == AuthSelfSignedTLSClientAuth
}

// clientAssertionType is RFC 7523 §2.2's client_assertion_type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// clientAssertionTTL keeps client assertions short-lived: they are single-use proofs.
const clientAssertionTTL = time.Minute

// ClientAuth says how the client authenticates to the token endpoint.
type ClientAuth struct {
	Method       string
	ClientID     string
	ClientSecret string
	// Key signs private_key_jwt assertions.
	Key *SigningKey
	// Certificate is the mTLS client certificate; the request must go through a Client made by
	// WithCertificate with it.
	Certificate *tls.Certificate
}

func (a ClientAuth) style() oauth2.AuthStyle {
	if a.Method == AuthClientSecretBasic {
		return oauth2.AuthStyleInHeader
	}
	return oauth2.AuthStyleInParams
}

func (a ClientAuth) sendsSecret() bool {
	return a.Method == AuthClientSecretBasic || a.Method == AuthClientSecretPost
}

// params returns the body parameters of JWT client authentication (RFC 7523 §2.2, OIDC Core §9).
func (a ClientAuth) params(tokenURL string, now time.Time) (url.Values, error) {
	var key *SigningKey
	switch a.Method {
	case AuthClientSecretJWT:
		key = &SigningKey{Key: []byte(a.ClientSecret), Alg: jose.HS256}
	case AuthPrivateKeyJWT:
		if a.Key == nil {
			return nil, fmt.Errorf("private_key_jwt needs a client key")
		}
		key = a.Key
	default:
		return nil, nil
	}
	assertion, err := key.SignJWT(Claims{
		Issuer:   a.ClientID,
		Subject:  a.ClientID,
		Audience: tokenURL,
		TTL:      clientAssertionTTL,
	}, now)
	if err != nil {
		return nil, fmt.Errorf("cannot sign client assertion: %w", err)
	}
	return url.Values{
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	}, nil
}

// postForm POSTs form to endpoint (for the errors: the what request), with the client
// authenticated as in a token request (RFC 6749 §2.3): Basic, or in the body by client_id with
// client_secret or a JWT assertion for audience.
func (c *Client) postForm(ctx context.Context, what, endpoint string, form url.Values, auth ClientAuth, audience string) (*http.Response, error) {
	authParams, err := auth.params(audience, c.now())
	if err != nil {
		return nil, &Error{Request: what, Cause: err.Error()}
	}
	for k, v := range authParams {
		form[k] = v
	}
	basic := auth.Method == AuthClientSecretBasic
	switch {
	case basic:
	case auth.Method == AuthClientSecretPost:
		form.Set("client_id", auth.ClientID)
		form.Set("client_secret", auth.ClientSecret)
	default:
		// Public clients and JWT-authenticated clients identify themselves in the body.
		form.Set("client_id", auth.ClientID)
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &Error{Request: what, Cause: "the endpoint URL is not valid"}
	}
	httpReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		// RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
		httpReq.SetBasicAuth(url.QueryEscape(auth.ClientID), url.QueryEscape(auth.ClientSecret))
	}
	resp, err := c.http.Do(httpReq)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			kind, cause := transportCause(ue, endpoint)
			return nil, &Error{Request: what, Cause: cause, kind: kind}
		}
		return nil, &Error{Request: what, Cause: "cannot reach " + hostOf(endpoint)}
	}
	return resp, nil
}
