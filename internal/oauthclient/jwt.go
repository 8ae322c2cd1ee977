package oauthclient

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// SigningKey signs JWTs: an RSA or EC private key, or an HMAC shared secret ([]byte).
type SigningKey struct {
	Key   any
	Alg   jose.SignatureAlgorithm
	KeyID string
}

// Claims are the claims of an assertion (RFC 7523 §3); Extra adds more and cannot override these.
type Claims struct {
	Issuer   string
	Subject  string
	Audience string
	TTL      time.Duration
	Extra    map[string]any
}

// SignJWT returns a compact JWS with iss, sub, aud, iat, exp and a fresh jti.
func (k *SigningKey) SignJWT(c Claims, now time.Time) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.KeyID != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), k.KeyID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: k.Key}, opts)
	if err != nil {
		return "", err
	}
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	std := jwt.Claims{
		Issuer:   c.Issuer,
		Subject:  c.Subject,
		Audience: jwt.Audience{c.Audience},
		IssuedAt: jwt.NewNumericDate(now),
		// Some providers reject an assertion whose nbf equals their clock when skewed; iat and
		// exp are what RFC 7523 requires.
		Expiry: jwt.NewNumericDate(now.Add(c.TTL)),
		ID:     jti,
	}
	builder := jwt.Signed(signer)
	if len(c.Extra) > 0 {
		builder = builder.Claims(c.Extra)
	}
	return builder.Claims(std).Serialize()
}

func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// KeyError says that the key itself is unusable, as opposed to the algorithm chosen for it.
type KeyError struct{ Msg string }

func (e *KeyError) Error() string { return e.Msg }

// IsPEM reports whether text looks like PEM rather than a shared secret.
func IsPEM(text string) bool { return strings.Contains(text, "-----BEGIN") }

// ParseSigningKey reads keyText as a PEM private key (RSA, EC) or, when it is not PEM, as an HMAC
// shared secret, and checks alg against it. An empty alg picks the key's usual algorithm.
func ParseSigningKey(keyText, alg, kid string) (*SigningKey, error) {
	var key any
	if IsPEM(keyText) {
		signer, err := parsePrivateKeyPEM(keyText)
		if err != nil {
			return nil, &KeyError{Msg: err.Error()}
		}
		key = signer
	} else {
		key = []byte(keyText)
	}
	if alg == "" {
		alg = defaultAlg(key)
	}
	if err := checkAlg(key, jose.SignatureAlgorithm(alg)); err != nil {
		return nil, err
	}
	return &SigningKey{Key: key, Alg: jose.SignatureAlgorithm(alg), KeyID: kid}, nil
}

func parsePrivateKeyPEM(text string) (crypto.Signer, error) {
	block, rest := pem.Decode([]byte(strings.TrimSpace(text)))
	if block == nil {
		return nil, errors.New("not a PEM block")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("more than one PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("PKCS #8 key does not parse")
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("unsupported key type %T: use RSA or EC", k)
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

func defaultAlg(key any) string {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return string(jose.RS256)
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P384():
			return string(jose.ES384)
		case elliptic.P521():
			return string(jose.ES512)
		}
		return string(jose.ES256)
	}
	return string(jose.HS256)
}

// checkAlg accepts alg only when the key can sign with it (RFC 7518 §3).
func checkAlg(key any, alg jose.SignatureAlgorithm) error {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			if k.N.BitLen() < 2048 {
				return &KeyError{Msg: fmt.Sprintf("RSA key has %d bits; at least 2048 are needed", k.N.BitLen())}
			}
			return nil
		default:
			// Not an RSA algorithm: refused below.
		}
	case *ecdsa.PrivateKey:
		want := map[jose.SignatureAlgorithm]elliptic.Curve{jose.ES256: elliptic.P256(), jose.ES384: elliptic.P384(), jose.ES512: elliptic.P521()}
		if c, ok := want[alg]; ok {
			if c != k.Curve {
				return fmt.Errorf("alg %s does not match the key's curve %s", alg, k.Curve.Params().Name)
			}
			return nil
		}
	case []byte:
		minBytes := map[jose.SignatureAlgorithm]int{jose.HS256: 32, jose.HS384: 48, jose.HS512: 64}
		if n, ok := minBytes[alg]; ok {
			if len(k) < n {
				return &KeyError{Msg: fmt.Sprintf("%s needs a shared secret of at least %d bytes", alg, n)}
			}
			return nil
		}
		return fmt.Errorf("alg %s needs a PEM private key; a shared secret signs HS256, HS384 or HS512", alg)
	}
	return fmt.Errorf("alg %s does not match the key (%s)", alg, keyKind(key))
}

func keyKind(key any) string {
	switch key.(type) {
	case *rsa.PrivateKey:
		return "RSA key: use RS256, RS384, RS512, PS256, PS384 or PS512"
	case *ecdsa.PrivateKey:
		return "EC key: use ES256, ES384 or ES512"
	}
	return "shared secret"
}
