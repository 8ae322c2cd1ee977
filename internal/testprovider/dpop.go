package testprovider

import (
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// dpopClaims are a DPoP proof's claims (RFC 9449 §4.2).
type dpopClaims struct {
	ID       string           `json:"jti"`
	Method   string           `json:"htm"`
	URI      string           `json:"htu"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	Nonce    string           `json:"nonce"`
	ATH      string           `json:"ath"`
}

// RequireDPoPNonce makes the token endpoint demand proofs carrying its current nonce (RFC 9449
// §8), answering use_dpop_nonce with a DPoP-Nonce header otherwise.
func (p *Provider) RequireDPoPNonce(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dpopNonceRequired = on
	if on && p.dpopNonce == "" {
		p.dpopNonce = randomToken()
	}
}

// RenewDPoPNonce replaces the nonce the token endpoint demands, as servers do over time.
func (p *Provider) RenewDPoPNonce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dpopNonce = randomToken()
}

// DPoPRequests counts token requests that carried a valid DPoP proof.
func (p *Provider) DPoPRequests() int64 { return p.dpopRequests.Load() }

// VerifyProof checks a proof as a resource server does (RFC 9449 §4.3, §7.1) for a request with
// method and uri, made with accessToken and, when nonce is set, that nonce. It returns the key's
// JWK thumbprint, which must be the token's jkt.
func (p *Provider) VerifyProof(proof, method, uri, accessToken, nonce string) (string, error) {
	claims, jkt, err := p.checkProof(proof, method, uri)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(accessToken))
	if claims.ATH != base64.RawURLEncoding.EncodeToString(sum[:]) {
		return "", errors.New("ath is not the access token's hash")
	}
	if claims.Nonce != nonce {
		return "", fmt.Errorf("nonce %q, want %q", claims.Nonce, nonce)
	}
	return jkt, nil
}

// tokenDPoP checks the DPoP header of a token request. It returns the key's thumbprint (empty
// without a proof), or whether it answered the request with an error itself.
func (p *Provider) tokenDPoP(w http.ResponseWriter, r *http.Request) (jkt string, answered bool) {
	header := r.Header.Values("DPoP")
	if len(header) == 0 || p.IgnoreDPoP {
		return "", false
	}
	if len(header) > 1 {
		writeError(w, http.StatusBadRequest, "invalid_dpop_proof", "more than one DPoP header")
		return "", true
	}
	// htu is the endpoint the request came to: token_endpoint or its mTLS alias.
	claims, jkt, err := p.checkProof(header[0], http.MethodPost, p.URL+r.URL.Path)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_dpop_proof", err.Error())
		return "", true
	}
	p.mu.Lock()
	required, nonce := p.dpopNonceRequired, p.dpopNonce
	p.mu.Unlock()
	if required && claims.Nonce != nonce {
		w.Header().Set("DPoP-Nonce", nonce)
		writeError(w, http.StatusBadRequest, "use_dpop_nonce", "the proof must carry the server's nonce")
		return "", true
	}
	p.dpopRequests.Add(1)
	return jkt, false
}

// checkProof verifies a proof's signature with its own embedded key, its type and algorithm,
// htm and htu, freshness, and that its jti was never seen.
func (p *Provider) checkProof(proof, method, uri string) (*dpopClaims, string, error) {
	tok, err := jwt.ParseSigned(proof, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256, jose.EdDSA})
	if err != nil {
		return nil, "", fmt.Errorf("proof does not parse: %v", err)
	}
	h := tok.Headers[0]
	if h.ExtraHeaders["typ"] != "dpop+jwt" || h.JSONWebKey == nil || !h.JSONWebKey.IsPublic() {
		return nil, "", errors.New("proof needs typ dpop+jwt and a public jwk")
	}
	var claims dpopClaims
	if err := tok.Claims(h.JSONWebKey.Key, &claims); err != nil {
		return nil, "", fmt.Errorf("proof signature: %v", err)
	}
	if claims.Method != method || claims.URI != uri {
		return nil, "", fmt.Errorf("htm %q htu %q, want %q %q", claims.Method, claims.URI, method, uri)
	}
	if claims.IssuedAt == nil || time.Since(claims.IssuedAt.Time()).Abs() > time.Minute || claims.ID == "" {
		return nil, "", errors.New("proof is stale or has no jti")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.usedJTIs["dpop:"+claims.ID] {
		return nil, "", errors.New("proof jti replayed")
	}
	p.usedJTIs["dpop:"+claims.ID] = true
	sum, err := h.JSONWebKey.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", err
	}
	return &claims, base64.RawURLEncoding.EncodeToString(sum), nil
}
