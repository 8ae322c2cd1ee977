package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// keyPrefix holds the mount's signing keys, private parts included: seal-wrapped.
const keyPrefix = "keys/"

const (
	defaultKeyAlg      = "ES256"
	defaultRetireAfter = 24 * time.Hour
	// minRotationPeriod keeps a schedule from rotating faster than providers re-fetch a JWKS.
	minRotationPeriod = time.Hour
	rsaKeyBits        = 2048
	// selfSignedValidity outlasts any sensible rotation_period; providers do not check it.
	selfSignedValidity = 10 * 365 * 24 * time.Hour
)

// keyAlgs are the algorithms a mount key can be generated for.
var keyAlgs = []string{"ES256", "RS256", "PS256", "EdDSA"}

// mountKey is a signing key generated and held by the mount, stored at "keys/<name>". It is
// rotated publish-ahead: Next is in the JWKS before it signs anything, and a replaced key stays in
// the JWKS until RetireAt, so a provider's cached JWKS always knows the kid it is shown.
type mountKey struct {
	entryFormat
	Alg            string        `json:"alg"`
	RotationPeriod time.Duration `json:"rotation_period"`
	RetireAfter    time.Duration `json:"retire_after"`
	Current        keyVersion    `json:"current"`
	Next           keyVersion    `json:"next"`
	Retiring       []keyVersion  `json:"retiring,omitempty"`
	// RotatedAt is when Current started signing.
	RotatedAt time.Time `json:"rotated_at"`
}

// keyVersion is one key pair of a mount key.
type keyVersion struct {
	// KID is the RFC 7638 thumbprint of the public key.
	KID string `json:"kid"`
	// Private is the PKCS #8 DER private key; it never leaves storage.
	Private []byte `json:"private"`
	// Certificate is a self-signed X.509 certificate (DER) of the key, for
	// self_signed_tls_client_auth; the JWK carries it as x5c, so that a provider can match it.
	Certificate []byte `json:"certificate"`
	// Public is the public JWK, kept so that publishing never parses a private key.
	Public    json.RawMessage `json:"public"`
	CreatedAt time.Time       `json:"created_at"`
	RetireAt  time.Time       `json:"retire_at"`
}

// newMountKey generates the current and next key pairs of a new key.
func newMountKey(alg string, rotationPeriod, retireAfter time.Duration, now time.Time) (*mountKey, error) {
	k := &mountKey{Alg: alg, RotationPeriod: rotationPeriod, RetireAfter: retireAfter, RotatedAt: now}
	if err := k.validate(); err != nil {
		return nil, err
	}
	var err error
	if k.Current, err = generateKeyVersion(alg, now); err != nil {
		return nil, err
	}
	if k.Next, err = generateKeyVersion(alg, now); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *mountKey) validate() error {
	if err := validateChoice("alg", k.Alg, keyAlgs); err != nil {
		return err
	}
	if k.RotationPeriod != 0 && (k.RotationPeriod < minRotationPeriod || k.RotationPeriod > maxDuration) {
		return fieldErrorf("rotation_period", "must be 0 (no schedule) or between %s and %s", minRotationPeriod, maxDuration)
	}
	if k.RetireAfter <= 0 || k.RetireAfter > maxDuration {
		return fieldErrorf("retire_after", "must be more than 0 and at most %s", maxDuration)
	}
	return nil
}

// rotate makes the published next key current, publishes a new next key, and keeps the replaced
// one published until retire_after has passed.
func (k *mountKey) rotate(now time.Time) error {
	next, err := generateKeyVersion(k.Alg, now)
	if err != nil {
		return err
	}
	old := k.Current
	old.RetireAt = now.Add(k.RetireAfter)
	k.Retiring = append(k.pruned(now), old)
	k.Current, k.Next, k.RotatedAt = k.Next, next, now
	return nil
}

// pruned is Retiring without the keys whose time is up.
func (k *mountKey) pruned(now time.Time) []keyVersion {
	return slices.DeleteFunc(slices.Clone(k.Retiring), func(v keyVersion) bool { return !now.Before(v.RetireAt) })
}

// due is when the key next needs the periodic function: its scheduled rotation or the end of a
// retiring key, whichever is first; zero for never.
func (k *mountKey) due() time.Time {
	var at time.Time
	if k.RotationPeriod > 0 {
		at = k.RotatedAt.Add(k.RotationPeriod)
	}
	for _, v := range k.Retiring {
		if at.IsZero() || v.RetireAt.Before(at) {
			at = v.RetireAt
		}
	}
	return at
}

// published is every public JWK of the key: current, next and retiring.
func (k *mountKey) published() []json.RawMessage {
	out := []json.RawMessage{k.Current.Public, k.Next.Public}
	for _, v := range k.Retiring {
		out = append(out, v.Public)
	}
	return out
}

// signingKey is the current private key, ready to sign JWTs with its kid.
func (k *mountKey) signingKey() (*oauthclient.SigningKey, error) {
	priv, err := x509.ParsePKCS8PrivateKey(k.Current.Private)
	if err != nil {
		return nil, fmt.Errorf("the stored key does not parse: %w", err)
	}
	return &oauthclient.SigningKey{Key: priv, Alg: jose.SignatureAlgorithm(k.Alg), KeyID: k.Current.KID}, nil
}

// certificate is the current key with certPEM, or with its own self-signed certificate when
// certPEM is empty, for mutual TLS.
func (k *mountKey) certificate(certPEM string) (*tls.Certificate, error) {
	priv, err := x509.ParsePKCS8PrivateKey(k.Current.Private)
	if err != nil {
		return nil, fmt.Errorf("the stored key does not parse: %w", err)
	}
	if certPEM == "" {
		return &tls.Certificate{Certificate: [][]byte{k.Current.Certificate}, PrivateKey: priv}, nil
	}
	return parseClientCertificate(certPEM, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k.Current.Private})), "client_key_name")
}

// parseClientCertificate pairs a PEM certificate chain with its PEM private key; a key that does
// not match the certificate blames keyField.
func parseClientCertificate(certPEM, keyPEM, keyField string) (*tls.Certificate, error) {
	rest, n := []byte(certPEM), 0
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); block.Type != "CERTIFICATE" || err != nil {
			return nil, fieldErrorf("client_cert", "must hold only PEM certificates (the client's first)")
		}
		n++
	}
	if n == 0 {
		return nil, fieldErrorf("client_cert", "must be a PEM certificate (chain)")
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fieldErrorf(keyField, "is not the private key of client_cert")
	}
	return &cert, nil
}

// selfSignedCertificate certifies priv's public key with priv itself: RFC 8705 §2.2 checks
// only that the certificate is the one registered, not who issued it or its dates.
func selfSignedCertificate(priv crypto.Signer, now time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "vault-plugin-secrets-oauth mount key"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(selfSignedValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func generateKeyVersion(alg string, now time.Time) (keyVersion, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256", "PS256":
		priv, err = rsa.GenerateKey(rand.Reader, rsaKeyBits)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return keyVersion{}, fmt.Errorf("unsupported alg %q", alg)
	}
	if err != nil {
		return keyVersion{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return keyVersion{}, err
	}
	certDER, err := selfSignedCertificate(priv, now)
	if err != nil {
		return keyVersion{}, err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return keyVersion{}, err
	}
	jwk := jose.JSONWebKey{Key: priv.Public(), Algorithm: alg, Use: "sig", Certificates: []*x509.Certificate{cert}}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return keyVersion{}, err
	}
	jwk.KeyID = base64URL(thumb)
	public, err := json.Marshal(jwk)
	if err != nil {
		return keyVersion{}, err
	}
	return keyVersion{KID: jwk.KeyID, Private: der, Certificate: certDER, Public: public, CreatedAt: now}, nil
}

// key returns the mount key of that name, or nil when there is none.
func (b *backend) key(ctx context.Context, s logical.Storage, name string) (*mountKey, error) {
	return b.cache.keys.load(ctx, s, name)
}

// existingKey is the named mount key; that it does not exist is an error naming field.
func (b *backend) existingKey(ctx context.Context, s logical.Storage, field, name string) (*mountKey, error) {
	k, err := b.key(ctx, s, name)
	if err == nil && k == nil {
		err = fieldErrorf(field, "mount key %q does not exist (create it at keys/%s)", clipInput(name), clipInput(name))
	}
	return k, err
}

// mountSigningKey is the current signing key of the named mount key; its errors name field.
func (b *backend) mountSigningKey(ctx context.Context, s logical.Storage, field, name string) (*oauthclient.SigningKey, error) {
	k, err := b.existingKey(ctx, s, field, name)
	if err != nil {
		return nil, err
	}
	return k.signingKey()
}

// putKey stores a key and keeps the cache and the rotation schedule in step. Called under the
// key's lock.
func (b *backend) putKey(ctx context.Context, s logical.Storage, name string, k *mountKey) error {
	if err := putJSON(ctx, s, keyPrefix+name, k); err != nil {
		return err
	}
	b.cache.keys.set(name, k)
	b.keySchedule.set(name, k.due())
	return nil
}

func (b *backend) keyLock(name string) *sync.Mutex {
	v, _ := b.keyLocks.LoadOrStore(name, &sync.Mutex{})
	return v.(*sync.Mutex)
}

// lockKey locks the mount key's name and reads the key as stored (nil: there is none); the
// caller unlocks, whatever the error.
func (b *backend) lockKey(ctx context.Context, s logical.Storage, name string) (*mountKey, func(), error) {
	lock := b.keyLock(name)
	lock.Lock()
	k, err := readEntry[mountKey](ctx, s, keyPrefix+name)
	return k, lock.Unlock, err
}

// keySchedule says when each key next needs the periodic function, so that a tick looks at the
// keys due and reads nothing else. It is built from storage on initialize.
type keySchedule struct {
	mu  sync.Mutex
	due map[string]time.Time
}

func (ks *keySchedule) set(name string, at time.Time) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.due == nil {
		ks.due = map[string]time.Time{}
	}
	if at.IsZero() {
		delete(ks.due, name)
		return
	}
	ks.due[name] = at
}

// dueBy lists the keys due at or before now.
func (ks *keySchedule) dueBy(now time.Time) []string {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var out []string
	for name, at := range ks.due {
		if !now.Before(at) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// buildKeySchedule reads every key once, when the mount starts.
func (b *backend) buildKeySchedule(ctx context.Context, s logical.Storage) error {
	names, err := s.List(ctx, keyPrefix)
	if err != nil {
		return fmt.Errorf("listing keys: %w", err)
	}
	for _, name := range names {
		k, err := b.key(ctx, s, name)
		if err != nil {
			return err
		}
		if k != nil {
			b.keySchedule.set(name, k.due())
		}
	}
	return nil
}

// maintainKeys rotates the keys whose rotation_period has passed and drops retired public keys.
func (b *backend) maintainKeys(ctx context.Context, s logical.Storage) error {
	var errs []error
	for _, name := range b.keySchedule.dueBy(b.now()) {
		if err := b.maintainKey(ctx, s, name); err != nil {
			errs = append(errs, fmt.Errorf("key %s: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("maintaining keys: %v", errs)
	}
	return nil
}

func (b *backend) maintainKey(ctx context.Context, s logical.Storage, name string) error {
	k, unlock, err := b.lockKey(ctx, s, name)
	defer unlock()
	if err != nil {
		return err
	}
	if k == nil {
		b.keySchedule.set(name, time.Time{})
		return nil
	}
	now := b.now()
	next := *k
	if next.RotationPeriod > 0 && !now.Before(next.RotatedAt.Add(next.RotationPeriod)) {
		if err := next.rotate(now); err != nil {
			return err
		}
		b.Logger().Info("mount key rotated on schedule", "key", name, "kid", next.Current.KID)
	} else {
		next.Retiring = next.pruned(now)
	}
	return b.putKey(ctx, s, name, &next)
}
