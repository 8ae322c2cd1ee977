package oauthclient

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// DPoP makes token requests carry DPoP proofs (RFC 9449 §5) and follows the server's nonces (§8).
type DPoP struct {
	// Proof signs the proof of one HTTP request; nonce is empty while the server has sent none.
	Proof func(htm, htu, nonce string) (string, error)
	// Nonce is the latest DPoP-Nonce the server sent, if known.
	Nonce string
	// SetNonce, when set, is told every new DPoP-Nonce the server sends.
	SetNonce func(nonce string)
}

// dpopTransport adds a proof to each request and notes the nonces the server sends.
type dpopTransport struct {
	next http.RoundTripper
	dpop *DPoP
	// nonce is the one the next proof carries; renewed that the server sent one it did not have.
	nonce   string
	renewed bool
}

func (t *dpopTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	proof, err := t.dpop.Proof(req.Method, HTU(req.URL), t.nonce)
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("DPoP", proof)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if n := resp.Header.Get("DPoP-Nonce"); n != "" && n != t.nonce {
		t.nonce, t.renewed = n, true
		if t.dpop.SetNonce != nil {
			t.dpop.SetNonce(n)
		}
	}
	return resp, nil
}

// HTU is a proof's htu claim: the request URI without query and fragment (RFC 9449 §4.2).
func HTU(u *url.URL) string {
	v := *u
	v.RawQuery, v.ForceQuery, v.Fragment, v.RawFragment, v.User = "", false, "", "", nil
	return v.String()
}

// DPoPKey is the private key a role's proofs are signed with (ES256).
type DPoPKey struct{ key *ecdsa.PrivateKey }

// NewDPoPKey generates a P-256 key and returns it as a PKCS #8 PEM block.
func NewDPoPKey() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// ParseDPoPKey reads a key made by NewDPoPKey.
func ParseDPoPKey(pemText string) (*DPoPKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("the DPoP key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("the DPoP key does not parse")
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("the DPoP key is not a P-256 key")
	}
	return &DPoPKey{key: ec}, nil
}

// PublicJWK is the public key as a JWK (RFC 7517), and its RFC 7638 SHA-256 thumbprint
// (the jkt a provider binds tokens to).
func (k *DPoPKey) PublicJWK() (jwk jose.JSONWebKey, thumbprint string) {
	jwk = jose.JSONWebKey{Key: &k.key.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	sum, _ := jwk.Thumbprint(crypto.SHA256) // cannot fail for an EC public key
	return jwk, base64.RawURLEncoding.EncodeToString(sum)
}

// Proof is a DPoP proof JWT (RFC 9449 §4.2) for one request: htm, htu, iat, a unique jti, and
// the nonce and ath (the access token's hash) when given.
func (k *DPoPKey) Proof(htm, htu, nonce, accessToken string, now time.Time) (string, error) {
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt")
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.key}, opts)
	if err != nil {
		return "", err
	}
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	claims := struct {
		ID       string           `json:"jti"`
		Method   string           `json:"htm"`
		URI      string           `json:"htu"`
		IssuedAt *jwt.NumericDate `json:"iat"`
		Nonce    string           `json:"nonce,omitempty"`
		ATH      string           `json:"ath,omitempty"`
	}{ID: jti, Method: htm, URI: htu, IssuedAt: jwt.NewNumericDate(now), Nonce: nonce}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		claims.ATH = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}
