// Package testprovider is an in-process OAuth 2.0 authorization server for tests: it implements
// the token endpoint (client_credentials, password, refresh_token with rotation, RFC 7523
// jwt-bearer, RFC 8693 token exchange, authorization_code with PKCE, RFC 8628 device_code), an
// authorization endpoint that signs a configured user in at once, a device authorization endpoint
// whose approval the test controls, every client authentication method the broker speaks, DPoP
// proofs and nonces (RFC 9449), metadata discovery, introspection and revocation, and counts what
// it is asked.
package testprovider

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Client is a registered client.
type Client struct {
	ID         string
	Secret     string
	AuthMethod string
	// PublicKey verifies private_key_jwt client assertions and RS/ES jwt-bearer assertions.
	PublicKey any
	// RedirectURIs are the registered redirect URIs, matched exactly.
	RedirectURIs []string
	// JWKSURI, instead of PublicKey, is where the client's public keys are fetched (OIDC
	// Registration §2 jwks_uri): once, and again when an assertion names a kid not in the set.
	// For self_signed_tls_client_auth, the certificate must be the x5c of one of its keys.
	JWKSURI string
	// TLSSubjectDN is the subject a tls_client_auth certificate must have (RFC 8705 §2.1.2);
	// its chain must lead to the provider's ClientCAs.
	TLSSubjectDN string
}

// Issued describes an access token the provider issued.
type Issued struct {
	ClientID  string
	Subject   string
	Scope     string
	ExpiresAt time.Time
	Revoked   bool
	Params    map[string][]string // the token request's non-secret parameters
	// SubjectToken and ActorToken are what a token exchange exchanged.
	SubjectToken, ActorToken string
	// JKT is the thumbprint of the DPoP key the token is bound to (RFC 9449 §6), if any.
	JKT string
}

type refreshGrant struct {
	clientID string
	subject  string
	scope    string
}

// Provider is a running test authorization server.
type Provider struct {
	*httptest.Server

	// TokenTTL is the expires_in of issued tokens; zero omits expires_in.
	TokenTTL time.Duration
	// IssueRefreshTokens makes password and refresh_token grants return a (rotated) refresh token.
	IssueRefreshTokens bool
	// IDTokens makes grants with scope "openid" return an id_token.
	IDTokens bool
	// Hold, when set, is waited on by every token request before it is answered.
	Hold chan struct{}
	// Intercept, when set, may answer a token or device authorization request itself (returning
	// true) to inject faults.
	Intercept func(w http.ResponseWriter, r *http.Request) bool
	// ClientCAs are the trust anchors of tls_client_auth certificates (see NewTLS).
	ClientCAs *x509.CertPool
	// RevokeGrantWithAccessToken makes revoking an access token revoke the refresh tokens of its
	// client and subject too, as RFC 7009 §2.1 allows.
	RevokeGrantWithAccessToken bool
	// IgnoreDPoP makes the token endpoint ignore DPoP proofs, as a provider without DPoP does.
	IgnoreDPoP bool

	// AuthorizeSubject is the user the authorization endpoint signs in (default "alice").
	AuthorizeSubject string
	// AuthorizeError, when set, is the error the authorization endpoint redirects with.
	AuthorizeError string
	// SendIss adds iss to authorization responses (RFC 9207).
	SendIss bool
	// IDTokenClaims, when set, may change the claims of an ID token before it is signed.
	IDTokenClaims func(claims map[string]any)
	// DeviceInterval and DeviceTTL are the interval and expires_in of device authorizations.
	DeviceInterval time.Duration
	DeviceTTL      time.Duration

	mu       sync.Mutex
	codes    map[string]*codeGrant
	devices  map[string]*deviceGrant
	clients  map[string]*Client
	users    map[string]string
	issued   map[string]*Issued
	refresh  map[string]refreshGrant
	usedJTIs map[string]bool
	metadata map[string]any
	exchange map[string]ExchangePolicy

	exchanges atomic.Int64

	// jwks caches each client's fetched key set.
	jwks        map[string]*jose.JSONWebKeySet
	jwksFetches atomic.Int64
	// Kids lists the kid of every verified client assertion, in order.
	kids []string
	// tokenPaths counts token requests by the path they came to.
	tokenPaths map[string]int

	dpopNonceRequired bool
	dpopNonce         string
	dpopRequests      atomic.Int64

	requests atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
}

// New starts a provider on loopback; it is closed when the test ends.
func New(t interface{ Cleanup(func()) }) *Provider {
	p := &Provider{
		TokenTTL:           time.Hour,
		IssueRefreshTokens: true,
		IDTokens:           true,
		clients:            map[string]*Client{},
		users:              map[string]string{},
		issued:             map[string]*Issued{},
		refresh:            map[string]refreshGrant{},
		usedJTIs:           map[string]bool{},
		codes:              map[string]*codeGrant{},
		devices:            map[string]*deviceGrant{},
		AuthorizeSubject:   "alice",
		DeviceInterval:     5 * time.Second,
		DeviceTTL:          10 * time.Minute,
		jwks:               map[string]*jose.JSONWebKeySet{},
		tokenPaths:         map[string]int{},
	}
	p.Server = httptest.NewServer(p.routes())
	t.Cleanup(p.Close)
	return p
}

// NewTLS starts a provider served over TLS that asks clients for a certificate (RFC 8705),
// naming clientCAs as the acceptable issuers, and trusting them for tls_client_auth. It serves
// its token and device authorization endpoints also under /mtls/, which its discovery document does not name until a
// test sets mtls_endpoint_aliases. Trust it with CertificatePEM.
func NewTLS(t interface{ Cleanup(func()) }, clientCAs *x509.CertPool) *Provider {
	p := New(t)
	p.Close()
	p.ClientCAs = clientCAs
	p.Server = httptest.NewUnstartedServer(p.routes())
	p.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, ClientCAs: clientCAs, MinVersion: tls.VersionTLS12}
	p.StartTLS()
	t.Cleanup(p.Close)
	return p
}

func (p *Provider) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("POST /mtls/token", p.token)
	mux.HandleFunc("POST /revoke", p.revoke)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /device_authorization", p.deviceAuthorization)
	mux.HandleFunc("POST /mtls/device_authorization", p.deviceAuthorization)
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	return mux
}

// CertificatePEM is the TLS server's certificate, for ca_pem.
func (p *Provider) CertificatePEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Certificate().Raw}))
}

// TokenRequestsAt is how many token requests came to path.
func (p *Provider) TokenRequestsAt(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenPaths[path]
}

// TokenURL is the token endpoint.
func (p *Provider) TokenURL() string { return p.URL + "/token" }

// AddClient registers a client.
func (p *Provider) AddClient(c *Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[c.ID] = c
}

// AddUser registers a resource owner for the password grant.
func (p *Provider) AddUser(name, password string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[name] = password
}

// SetMetadata overrides discovery fields (e.g. token_endpoint_auth_methods_supported).
func (p *Provider) SetMetadata(md map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.metadata = md
}

// JWKSFetches is how many times a client's jwks_uri was fetched.
func (p *Provider) JWKSFetches() int64 { return p.jwksFetches.Load() }

// AssertionKIDs lists the kid headers of the client assertions verified so far.
func (p *Provider) AssertionKIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.kids)
}

// Requests is how many token requests arrived, failed ones included.
func (p *Provider) Requests() int64 { return p.requests.Load() }

// PeakConcurrency is the most token requests that were open at once.
func (p *Provider) PeakConcurrency() int64 { return p.peak.Load() }

// Introspect reports what the provider knows of an access token and whether it is active.
func (p *Provider) Introspect(token string) (Issued, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	it, ok := p.issued[token]
	if !ok {
		return Issued{}, false
	}
	return *it, !it.Revoked && time.Now().Before(it.ExpiresAt)
}

// RefreshTokenValid reports whether a refresh token would still be accepted.
func (p *Provider) RefreshTokenValid(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.refresh[rt]
	return ok
}

// IssueRefreshToken mints a refresh token for a client and subject, as an operator would obtain
// one out of band to import.
func (p *Provider) IssueRefreshToken(clientID, subject, scope string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	rt := randomToken()
	p.refresh[rt] = refreshGrant{clientID: clientID, subject: subject, scope: scope}
	return rt
}

// AcceptRefreshToken makes the provider take rt, issued elsewhere, as a refresh token of client
// and subject.
func (p *Provider) AcceptRefreshToken(rt, clientID, subject, scope string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh[rt] = refreshGrant{clientID: clientID, subject: subject, scope: scope}
}

// RevokeRefreshTokens invalidates every refresh token.
func (p *Provider) RevokeRefreshTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.refresh)
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	md := map[string]any{
		"issuer":                                p.URL,
		"token_endpoint":                        p.TokenURL(),
		"revocation_endpoint":                   p.URL + "/revoke",
		"authorization_endpoint":                p.URL + "/authorize",
		"device_authorization_endpoint":         p.URL + "/device_authorization",
		"response_modes_supported":              []string{"query", "form_post"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none"},
		"grant_types_supported":                 []string{"client_credentials", "password", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:token-exchange", "authorization_code", grantDeviceCode},
	}
	p.mu.Lock()
	for k, v := range p.metadata {
		md[k] = v
	}
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, md)
}

func (p *Provider) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "form does not parse")
		return
	}
	if _, oerr := p.authenticate(r); oerr != nil {
		writeError(w, http.StatusUnauthorized, "invalid_client", oerr.desc)
		return
	}
	p.mu.Lock()
	if it, ok := p.issued[r.PostForm.Get("token")]; ok {
		it.Revoked = true
		if p.RevokeGrantWithAccessToken {
			for rt, g := range p.refresh {
				if g.clientID == it.ClientID && g.subject == it.Subject {
					delete(p.refresh, rt)
				}
			}
		}
	}
	delete(p.refresh, r.PostForm.Get("token"))
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.mu.Lock()
	p.tokenPaths[r.URL.Path]++
	p.mu.Unlock()
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	for {
		peak := p.peak.Load()
		if n <= peak || p.peak.CompareAndSwap(peak, n) {
			break
		}
	}
	if p.Hold != nil {
		<-p.Hold
	}
	if p.Intercept != nil && p.Intercept(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "form does not parse")
		return
	}
	jkt, answered := p.tokenDPoP(w, r)
	if answered {
		return
	}
	client, oerr := p.authenticate(r)
	if oerr != nil {
		writeError(w, http.StatusUnauthorized, "invalid_client", oerr.desc)
		return
	}
	var subject, scope, nonce string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		subject, scope, nonce, oerr = p.codeGrant(client, r)
	case grantDeviceCode:
		subject, scope, oerr = p.deviceGrant(client, r)
	case "client_credentials":
		subject, scope = client.ID, r.PostForm.Get("scope")
	case "password":
		subject, scope, oerr = p.passwordGrant(r)
	case "refresh_token":
		subject, scope, oerr = p.refreshGrant(client, r)
	case "urn:ietf:params:oauth:grant-type:jwt-bearer":
		subject, oerr = p.jwtBearerGrant(client, r)
		scope = r.PostForm.Get("scope")
	case "urn:ietf:params:oauth:grant-type:token-exchange":
		subject, oerr = p.exchangeGrant(client, r)
		scope = r.PostForm.Get("scope")
	default:
		oerr = &oauthError{"unsupported_grant_type", "grant_type is not supported"}
	}
	if oerr != nil {
		writeError(w, http.StatusBadRequest, oerr.code, oerr.desc)
		return
	}
	writeJSON(w, http.StatusOK, p.issue(client.ID, subject, scope, nonce, jkt, r))
}

func (p *Provider) issue(clientID, subject, scope, nonce, jkt string, r *http.Request) map[string]any {
	grant := r.PostForm.Get("grant_type")
	at := randomToken()
	resp := map[string]any{"access_token": at, "token_type": "Bearer", "scope": scope}
	if jkt != "" {
		resp["token_type"] = "DPoP"
	}
	ttl := p.TokenTTL
	if ttl > 0 {
		resp["expires_in"] = int(ttl.Seconds())
	} else {
		ttl = 24 * time.Hour
	}
	params := map[string][]string{}
	for k, v := range r.PostForm {
		if !slices.Contains(secretParams, k) {
			params[k] = v
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.issued[at] = &Issued{ClientID: clientID, Subject: subject, Scope: scope, ExpiresAt: time.Now().Add(ttl), Params: params, JKT: jkt,
		SubjectToken: r.PostForm.Get("subject_token"), ActorToken: r.PostForm.Get("actor_token")}
	if p.IssueRefreshTokens && slices.Contains([]string{"password", "refresh_token", "authorization_code", grantDeviceCode}, grant) {
		rt := randomToken()
		p.refresh[rt] = refreshGrant{clientID: clientID, subject: subject, scope: scope}
		resp["refresh_token"] = rt
	}
	if grant == "urn:ietf:params:oauth:grant-type:token-exchange" {
		resp["issued_token_type"] = TokenTypeAccessToken
	}
	if p.IDTokens && slices.Contains(strings.Fields(scope), "openid") {
		resp["id_token"] = "id." + randomToken()
		if grant == "authorization_code" || grant == grantDeviceCode {
			resp["id_token"] = p.idToken(clientID, subject, nonce)
		}
	}
	return resp
}

// secretParams are never recorded.
var secretParams = []string{"client_secret", "password", "refresh_token", "assertion", "client_assertion", "subject_token", "actor_token", "code", "code_verifier", "device_code"}

func (p *Provider) passwordGrant(r *http.Request) (string, string, *oauthError) {
	user, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	p.mu.Lock()
	defer p.mu.Unlock()
	if want, ok := p.users[user]; !ok || want != pass || user == "" {
		return "", "", &oauthError{"invalid_grant", "username or password is wrong"}
	}
	return user, r.PostForm.Get("scope"), nil
}

// refreshGrant consumes the refresh token: each one works once (rotation).
func (p *Provider) refreshGrant(client *Client, r *http.Request) (string, string, *oauthError) {
	rt := r.PostForm.Get("refresh_token")
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.refresh[rt]
	if !ok || g.clientID != client.ID {
		return "", "", &oauthError{"invalid_grant", "refresh token is invalid, expired or revoked"}
	}
	delete(p.refresh, rt)
	return g.subject, g.scope, nil
}

type oauthError struct{ code, desc string }

func writeError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
