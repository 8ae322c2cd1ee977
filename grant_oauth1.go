package oauth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"errors"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauth1"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// oauth1Settings are an OAuth 1.0a role's credentials (RFC 5849 §1.1): the client's and the
// token's. The role signs requests with them (sign/<name>); it has no token endpoint grant.
type oauth1Settings struct {
	ConsumerKey        string `json:"consumer_key,omitempty"`
	ConsumerSecret     string `json:"consumer_secret,omitempty"`
	ConsumerPrivateKey string `json:"consumer_private_key,omitempty"`
	SignatureMethod    string `json:"signature_method,omitempty"`
	Token              string `json:"token,omitempty"`
	TokenSecret        string `json:"token_secret,omitempty"`
	// The three-legged flow's endpoints (§2): a person's authorization gives the token.
	RequestTokenURL string `json:"request_token_url,omitempty"`
	AuthorizeURL    string `json:"authorize_url,omitempty"`
	AccessTokenURL  string `json:"access_token_url,omitempty"`
}

// oauth1Fields are the role fields of OAuth 1.0a roles.
var oauth1Fields = map[string]*framework.FieldSchema{
	"consumer_key":         {Type: framework.TypeString, Description: "oauth1: the consumer key (client identifier)."},
	"consumer_secret":      {Type: framework.TypeString, Description: "oauth1: the consumer secret. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	"consumer_private_key": {Type: framework.TypeString, Description: "oauth1: PEM RSA private key for RSA-SHA1. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	"signature_method":     {Type: framework.TypeString, Description: "oauth1: HMAC-SHA1 (default), HMAC-SHA256, RSA-SHA1, or PLAINTEXT (https URLs only)."},
	"token":                {Type: framework.TypeString, Description: "oauth1: the imported access token (oauth_token). Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	"token_secret":         {Type: framework.TypeString, Description: "oauth1: the imported token secret. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	"request_token_url":    {Type: framework.TypeString, Description: "oauth1 three-legged flow: the temporary credential request endpoint."},
	"authorize_url":        {Type: framework.TypeString, Description: "oauth1 three-legged flow: the resource owner authorization endpoint."},
	"access_token_url":     {Type: framework.TypeString, Description: "oauth1 three-legged flow: the token request endpoint."},
}

// oauth1ReadFields is what a role read shows of them.
var oauth1ReadFields = map[string]*framework.FieldSchema{
	"consumer_key":             {Type: framework.TypeString, Description: "oauth1: consumer key."},
	"consumer_secret_set":      {Type: framework.TypeBool, Description: "oauth1: whether a consumer secret is set."},
	"consumer_private_key_set": {Type: framework.TypeBool, Description: "oauth1: whether an RSA-SHA1 key is set."},
	"signature_method":         {Type: framework.TypeString, Description: "oauth1: signature method."},
	"token_set":                {Type: framework.TypeBool, Description: "oauth1: whether a token is set."},
	"token_secret_set":         {Type: framework.TypeBool, Description: "oauth1: whether a token secret is set."},
	"request_token_url":        {Type: framework.TypeString, Description: "oauth1: temporary credential request endpoint."},
	"authorize_url":            {Type: framework.TypeString, Description: "oauth1: resource owner authorization endpoint."},
	"access_token_url":         {Type: framework.TypeString, Description: "oauth1: token request endpoint."},
}

func (s *oauth1Settings) update(d *framework.FieldData) {
	setString(d, "consumer_key", &s.ConsumerKey)
	setString(d, "consumer_secret", &s.ConsumerSecret)
	setString(d, "consumer_private_key", &s.ConsumerPrivateKey)
	setString(d, "signature_method", &s.SignatureMethod)
	setString(d, "token", &s.Token)
	setString(d, "token_secret", &s.TokenSecret)
	setString(d, "request_token_url", &s.RequestTokenURL)
	setString(d, "authorize_url", &s.AuthorizeURL)
	setString(d, "access_token_url", &s.AccessTokenURL)
}

func (s oauth1Settings) describe(data map[string]any) {
	data["consumer_key"] = s.ConsumerKey
	data["consumer_secret_set"] = s.ConsumerSecret != ""
	data["consumer_private_key_set"] = s.ConsumerPrivateKey != ""
	data["signature_method"] = s.SignatureMethod
	data["token_set"] = s.Token != ""
	data["token_secret_set"] = s.TokenSecret != ""
	data["request_token_url"] = s.RequestTokenURL
	data["authorize_url"] = s.AuthorizeURL
	data["access_token_url"] = s.AccessTokenURL
}

// threeLegged reports whether the role obtains its token through a person's authorization.
func (s oauth1Settings) threeLegged() bool { return s.RequestTokenURL != "" }

// oauth1Flow validates OAuth 1.0a roles. They sign requests and never ask a token endpoint for a
// token, so the refresher leaves them alone and creds and rotate refuse them.
var oauth1Flow = grantFlow{
	validate: func(r *roleEntry, _ *configEntry) error {
		s := r.oauth1Settings
		if s.ConsumerKey == "" {
			return fieldErrorf("consumer_key", "an oauth1 role needs a consumer key")
		}
		for field, v := range map[string]string{"consumer_key": s.ConsumerKey, "consumer_secret": s.ConsumerSecret, "token": s.Token, "token_secret": s.TokenSecret} {
			if err := validateLength(field, v, maxFieldBytes); err != nil {
				return err
			}
		}
		if err := validateChoice("signature_method", s.SignatureMethod, oauth1.Methods); err != nil {
			return err
		}
		if s.SignatureMethod == oauth1.RSASHA1 {
			if _, err := s.privateKey(); err != nil {
				return err
			}
		} else if s.ConsumerSecret == "" {
			return fieldErrorf("consumer_secret", "signature method %s needs a consumer secret", s.SignatureMethod)
		}
		endpoints := map[string]string{"request_token_url": s.RequestTokenURL, "authorize_url": s.AuthorizeURL, "access_token_url": s.AccessTokenURL}
		for field, u := range endpoints {
			if err := validateEndpointURL(field, u); err != nil {
				return err
			}
			if (u == "") != (s.RequestTokenURL == "") {
				return fieldErrorf(field, "the three-legged flow needs request_token_url, authorize_url and access_token_url together")
			}
		}
		if s.Token == "" && !s.threeLegged() {
			return fieldErrorf("token", "an oauth1 role needs the token (and token_secret) to sign with, or request_token_url, authorize_url and access_token_url to obtain them")
		}
		if r.DPoP {
			return fieldErrorf("dpop", "DPoP binds OAuth 2.0 tokens; an oauth1 role signs with its token secret")
		}
		return nil
	},
	request: func(context.Context, *grantRequest) (*oauthclient.Token, error) {
		return nil, errors.New("an oauth1 role obtains no token from a token endpoint")
	},
}

// oauth1NoToken answers creds and rotate on an oauth1 role.
func oauth1NoToken(name string) error {
	return fieldErrorf("name", "role %q is an oauth1 role, which has no token to read: have each request signed with vault write <mount>/sign/%s method=... url=...", name, name)
}

// oauth1Only refuses the oauth1 fields on roles of other grants, where they would do nothing.
func (r *roleEntry) oauth1Only() error {
	if r.GrantType == grantOAuth1 {
		return nil
	}
	for field, v := range map[string]string{"consumer_key": r.ConsumerKey, "consumer_secret": r.ConsumerSecret, "consumer_private_key": r.ConsumerPrivateKey, "signature_method": r.SignatureMethod, "token": r.Token, "token_secret": r.TokenSecret,
		"request_token_url": r.RequestTokenURL, "authorize_url": r.AuthorizeURL, "access_token_url": r.AccessTokenURL} {
		if v != "" {
			return fieldErrorf(field, "is for grant_type=oauth1 roles only")
		}
	}
	return nil
}

// privateKey parses the RSA-SHA1 key.
func (s oauth1Settings) privateKey() (*rsa.PrivateKey, error) {
	if err := validateLength("consumer_private_key", s.ConsumerPrivateKey, maxPEMBytes); err != nil {
		return nil, err
	}
	key, err := parseKeyField("consumer_private_key", "signature_method", s.ConsumerPrivateKey, "RS256", "", true)
	if err != nil {
		return nil, err
	}
	rsaKey, ok := key.Key.(*rsa.PrivateKey)
	if !ok {
		return nil, fieldErrorf("consumer_private_key", "RSA-SHA1 needs an RSA private key")
	}
	return rsaKey, nil
}

// credentials are what the signer needs.
func (s oauth1Settings) credentials() (oauth1.Credentials, error) {
	c := oauth1.Credentials{
		ConsumerKey: s.ConsumerKey, ConsumerSecret: s.ConsumerSecret,
		Token: s.Token, TokenSecret: s.TokenSecret, Method: s.SignatureMethod,
	}
	if s.SignatureMethod == oauth1.RSASHA1 {
		key, err := s.privateKey()
		if err != nil {
			return c, err
		}
		c.PrivateKey = key
	}
	return c, nil
}

// signOAuth1 signs one request described by the sign/ fields.
func (b *backend) signOAuth1(name string, role *roleEntry, req signRequest) (map[string]any, error) {
	if role.Token == "" {
		return nil, &notAuthorizedError{name: name, startPath: "authorize"}
	}
	u, err := parseRequestURL(req.url)
	if err != nil {
		return nil, err
	}
	if role.SignatureMethod == oauth1.Plaintext && u.Scheme != "https" {
		// §3.4.4: PLAINTEXT sends the secrets themselves; only TLS protects them.
		return nil, fieldErrorf("url", "PLAINTEXT signatures carry the secrets and are made only for https URLs")
	}
	params := make([]oauth1.Param, 0, len(req.params))
	for _, p := range req.params {
		name, value, _ := cutParam(p)
		params = append(params, oauth1.Param{Name: name, Value: value})
	}
	var bodyHash string
	if req.bodyHash != "" {
		if bodyHash, err = checkBodyHash(req.bodyHash, role.SignatureMethod); err != nil {
			return nil, err
		}
	}
	creds, err := role.credentials()
	if err != nil {
		return nil, err
	}
	signed, err := oauth1.Sign(creds, oauth1.Request{Method: req.method, URL: req.url, Params: params, BodyHash: bodyHash, Timestamp: b.now().Unix()})
	if err != nil {
		return nil, fieldErrorf("url", "%v", err)
	}
	return map[string]any{"authorization": signed.Authorization, "oauth_nonce": signed.Nonce, "oauth_timestamp": signed.Timestamp}, nil
}

// checkBodyHash accepts the base64 digest of a body under the role's signature method.
func checkBodyHash(value, method string) (string, error) {
	size := oauth1.BodyHashSize(method)
	if size == 0 {
		return "", fieldErrorf("body_hash", "oauth_body_hash is not defined for PLAINTEXT")
	}
	if raw, err := base64.StdEncoding.DecodeString(value); err != nil || len(raw) != size {
		return "", fieldErrorf("body_hash", "must be the base64 %d-byte digest of the body (the hash of %s)", size, method)
	}
	return value, nil
}
