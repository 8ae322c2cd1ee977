package testprovider

import (
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

var signatureAlgs = []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// authenticate identifies the client by the one method the request uses and checks that it is
// the method the client registered (RFC 6749 §2.3, RFC 7523 §2.2).
func (p *Provider) authenticate(r *http.Request) (*Client, *oauthError) {
	form := r.PostForm
	var id, method string
	if user, pass, ok := r.BasicAuth(); ok {
		// RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
		id, _ = url.QueryUnescape(user)
		secret, _ := url.QueryUnescape(pass)
		method = "client_secret_basic"
		c := p.client(id)
		if c == nil || !equal(c.Secret, secret) {
			return nil, &oauthError{"invalid_client", "client authentication failed"}
		}
		return p.checkMethod(c, method)
	}
	switch {
	case form.Get("client_assertion") != "":
		return p.assertionClient(r)
	case form.Get("client_secret") != "":
		c := p.client(form.Get("client_id"))
		if c == nil || !equal(c.Secret, form.Get("client_secret")) {
			return nil, &oauthError{"invalid_client", "client authentication failed"}
		}
		return p.checkMethod(c, "client_secret_post")
	case form.Get("client_id") != "":
		c := p.client(form.Get("client_id"))
		if c == nil {
			return nil, &oauthError{"invalid_client", "unknown client"}
		}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			return p.mtlsClient(c, r.TLS.PeerCertificates)
		}
		return p.checkMethod(c, "none")
	}
	return nil, &oauthError{"invalid_client", "no client authentication"}
}

// mtlsClient authenticates the client by its TLS certificate (RFC 8705 §2): a certificate of
// the registered subject that chains to ClientCAs, or a self-signed one the client registered.
func (p *Provider) mtlsClient(c *Client, chain []*x509.Certificate) (*Client, *oauthError) {
	switch c.AuthMethod {
	case "tls_client_auth":
		intermediates := x509.NewCertPool()
		for _, ic := range chain[1:] {
			intermediates.AddCert(ic)
		}
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: p.ClientCAs, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if p.ClientCAs == nil || err != nil || chain[0].Subject.String() != c.TLSSubjectDN {
			return nil, &oauthError{"invalid_client", "client certificate is not trusted for this client"}
		}
		return c, nil
	case "self_signed_tls_client_auth":
		if !p.registeredCertificate(c, chain[0]) {
			return nil, &oauthError{"invalid_client", "unregistered client certificate provided"}
		}
		return c, nil
	}
	return p.checkMethod(c, "tls_client_auth")
}

// registeredCertificate looks for cert among the x5c of the client's JWKS, fetched again once
// when it is not there.
func (p *Provider) registeredCertificate(c *Client, cert *x509.Certificate) bool {
	find := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		if set := p.jwks[c.ID]; set != nil {
			for _, k := range set.Keys {
				if len(k.Certificates) > 0 && k.Certificates[0].Equal(cert) {
					return true
				}
			}
		}
		return false
	}
	return find() || (p.fetchJWKS(c) && find())
}

func (p *Provider) checkMethod(c *Client, used string) (*Client, *oauthError) {
	if c.AuthMethod != used {
		return nil, &oauthError{"invalid_client", "client must authenticate with " + c.AuthMethod}
	}
	return c, nil
}

func (p *Provider) client(id string) *Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clients[id]
}

// assertionClient verifies a client_secret_jwt or private_key_jwt client assertion.
func (p *Provider) assertionClient(r *http.Request) (*Client, *oauthError) {
	form := r.PostForm
	if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		return nil, &oauthError{"invalid_client", "unsupported client_assertion_type"}
	}
	tok, err := jwt.ParseSigned(form.Get("client_assertion"), signatureAlgs)
	if err != nil {
		return nil, &oauthError{"invalid_client", "client_assertion does not parse"}
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, &oauthError{"invalid_client", "client_assertion claims do not parse"}
	}
	c := p.client(unverified.Issuer)
	if c == nil || (form.Get("client_id") != "" && form.Get("client_id") != c.ID) {
		return nil, &oauthError{"invalid_client", "unknown client"}
	}
	method, key := "private_key_jwt", c.PublicKey
	if tok.Headers[0].Algorithm[0] == 'H' {
		method, key = "client_secret_jwt", []byte(c.Secret)
	}
	if _, oerr := p.checkMethod(c, method); oerr != nil {
		return nil, oerr
	}
	if method == "private_key_jwt" && c.JWKSURI != "" {
		key = p.clientKey(c, tok.Headers[0])
	}
	claims, oerr := p.verify(tok, key, "invalid_client")
	if oerr != nil {
		return nil, oerr
	}
	if claims.Subject != c.ID {
		return nil, &oauthError{"invalid_client", "client assertion sub must be the client_id"}
	}
	p.mu.Lock()
	p.kids = append(p.kids, tok.Headers[0].KeyID)
	p.mu.Unlock()
	return c, nil
}

// clientKey finds the assertion's kid (and alg) in the client's key set, fetching the set when it
// is not cached or lacks the kid. Nil when no key fits.
func (p *Provider) clientKey(c *Client, h jose.Header) any {
	find := func() any {
		p.mu.Lock()
		defer p.mu.Unlock()
		set := p.jwks[c.ID]
		if set == nil {
			return nil
		}
		for _, k := range set.Key(h.KeyID) {
			if k.Algorithm == "" || k.Algorithm == h.Algorithm {
				return k.Key
			}
		}
		return nil
	}
	if key := find(); key != nil || !p.fetchJWKS(c) {
		return key
	}
	return find()
}

// fetchJWKS fetches the client's key set into the cache and reports whether it could.
func (p *Provider) fetchJWKS(c *Client) bool {
	if c.JWKSURI == "" {
		return false
	}
	p.jwksFetches.Add(1)
	resp, err := http.Get(c.JWKSURI)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&set) != nil {
		return false
	}
	p.mu.Lock()
	p.jwks[c.ID] = &set
	p.mu.Unlock()
	return true
}

// jwtBearerGrant verifies an RFC 7523 §2.1 authorization grant assertion whose issuer is a
// registered client: signed with its secret (HS*) or its key.
func (p *Provider) jwtBearerGrant(client *Client, r *http.Request) (string, *oauthError) {
	tok, err := jwt.ParseSigned(r.PostForm.Get("assertion"), signatureAlgs)
	if err != nil {
		return "", &oauthError{"invalid_grant", "assertion does not parse"}
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", &oauthError{"invalid_grant", "assertion claims do not parse"}
	}
	issuer := p.client(unverified.Issuer)
	if issuer == nil || issuer.ID != client.ID {
		return "", &oauthError{"invalid_grant", "assertion issuer is not trusted"}
	}
	key := issuer.PublicKey
	if tok.Headers[0].Algorithm[0] == 'H' {
		key = []byte(issuer.Secret)
	}
	claims, oerr := p.verify(tok, key, "invalid_grant")
	if oerr != nil {
		return "", oerr
	}
	if claims.Subject == "" {
		return "", &oauthError{"invalid_grant", "assertion has no sub"}
	}
	return claims.Subject, nil
}

// verify checks signature, audience (token endpoint or issuer), exp, iat and a fresh jti.
func (p *Provider) verify(tok *jwt.JSONWebToken, key any, code string) (*jwt.Claims, *oauthError) {
	var claims jwt.Claims
	if key == nil || tok.Claims(key, &claims) != nil {
		return nil, &oauthError{code, "assertion signature is invalid"}
	}
	if !slices.Contains(claims.Audience, p.TokenURL()) && !slices.Contains(claims.Audience, p.URL) {
		return nil, &oauthError{code, "assertion audience is wrong"}
	}
	if claims.Expiry == nil || claims.IssuedAt == nil || claims.ID == "" {
		return nil, &oauthError{code, "assertion lacks exp, iat or jti"}
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, 5*time.Second); err != nil {
		return nil, &oauthError{code, "assertion is expired or not yet valid"}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.usedJTIs[claims.ID] {
		return nil, &oauthError{code, "assertion jti was already used"}
	}
	p.usedJTIs[claims.ID] = true
	return &claims, nil
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
