package oauth

import (
	"encoding/json"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// setDPoP turns DPoP on, with a new key, or off, dropping the key: a key once turned off is
// never bound to a token again.
func (r *roleEntry) setDPoP(on bool) error {
	switch {
	case on && !r.DPoP:
		key, err := oauthclient.NewDPoPKey()
		if err != nil {
			return err
		}
		r.DPoPKey = key
	case !on:
		r.DPoPKey = ""
	}
	r.DPoP = on
	return nil
}

// dpopKey is the role's DPoP key, or nil when the role does not use DPoP.
func (r *roleEntry) dpopKey() (*oauthclient.DPoPKey, error) {
	if !r.DPoP {
		return nil, nil
	}
	return oauthclient.ParseDPoPKey(r.DPoPKey)
}

// dpopThumbprint names the role's DPoP key in its token binding (empty without DPoP).
func (r *roleEntry) dpopThumbprint() string {
	key, err := r.dpopKey()
	if err != nil || key == nil {
		return ""
	}
	_, jkt := key.PublicJWK()
	return jkt
}

// parsedDPoPKey is a role's DPoP key as parsed from its stored PEM.
type parsedDPoPKey struct {
	pem string
	key *oauthclient.DPoPKey
}

// dpopKey is the role's DPoP key (nil without DPoP), parsed once per key: a new key (dpop turned
// off and on) replaces the one kept.
func (b *backend) dpopKey(name string, role *roleEntry) (*oauthclient.DPoPKey, error) {
	if !role.DPoP {
		return nil, nil
	}
	if v, ok := b.dpopKeys.Load(name); ok && v.(parsedDPoPKey).pem == role.DPoPKey {
		return v.(parsedDPoPKey).key, nil
	}
	key, err := role.dpopKey()
	if err != nil {
		return nil, err
	}
	b.dpopKeys.Store(name, parsedDPoPKey{pem: role.DPoPKey, key: key})
	return key, nil
}

// dpopRequest is the DPoP hook of the role's token requests: proofs signed with its key, and the
// latest nonce the provider gave it, kept in memory (RFC 9449 §8).
func (b *backend) dpopRequest(name string, role *roleEntry) (*oauthclient.DPoP, error) {
	key, err := b.dpopKey(name, role)
	if err != nil || key == nil {
		return nil, err
	}
	nonce, _ := b.dpopNonces.Load(name)
	latest, _ := nonce.(string)
	return &oauthclient.DPoP{
		Proof: func(htm, htu, nonce string) (string, error) {
			return key.Proof(htm, htu, nonce, "", b.now())
		},
		Nonce:    latest,
		SetNonce: func(n string) { b.dpopNonces.Store(name, n) },
	}, nil
}

// describeDPoP adds the public key and its thumbprint to a role's status.
func (r *roleEntry) describeDPoP(data map[string]any) {
	key, err := r.dpopKey()
	if err != nil || key == nil {
		return
	}
	jwk, jkt := key.PublicJWK()
	buf, _ := jwk.MarshalJSON()
	var public map[string]any
	_ = json.Unmarshal(buf, &public)
	data["dpop_jwk"], data["dpop_jkt"] = public, jkt
}

// dpopStatusFields are what a DPoP role's status adds.
var dpopStatusFields = map[string]*framework.FieldSchema{
	"dpop_jwk": {Type: framework.TypeMap, Description: "dpop roles: the public JWK tokens are bound to."},
	"dpop_jkt": {Type: framework.TypeString, Description: "dpop roles: its RFC 7638 thumbprint (the token's cnf.jkt)."},
}

// signDPoP answers sign/ for a DPoP role: the token as the Authorization header and a proof
// bound to it for the described request (RFC 9449 §7.1). A provider that ignored the proofs
// issued a bearer token, which goes out under its own scheme (with a warning).
func (b *backend) signDPoP(name string, role *roleEntry, tok *tokenEntry, req signRequest) (map[string]any, error) {
	u, err := parseRequestURL(req.url)
	if err != nil {
		return nil, err
	}
	key, err := b.dpopKey(name, role)
	if err != nil {
		return nil, err
	}
	proof, err := key.Proof(req.method, oauthclient.HTU(u), req.nonce, tok.AccessToken, b.now())
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"authorization": tok.TokenType + " " + tok.AccessToken,
		"dpop":          proof,
		"expires_at":    rfc3339(tok.ExpiresAt),
	}, nil
}
