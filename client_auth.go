package oauth

import (
	"errors"
	"slices"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

func (c clientCredentials) describe(data map[string]any) {
	data["client_id"] = c.ClientID
	data["client_secret_set"] = c.ClientSecret != ""
	data["auth_method"] = c.AuthMethod
	data["client_key_set"] = c.ClientKey != ""
	data["client_key_alg"] = c.ClientKeyAlg
	data["client_key_kid"] = c.ClientKeyKID
	data["client_key_name"] = c.ClientKeyName
	data["client_cert"] = c.ClientCert
	data["client_secret_next_set"] = c.ClientSecretNext != ""
	data["client_secret_promoted_at"] = rfc3339(c.ClientSecretPromotedAt)
}

func (c *clientCredentials) update(d *framework.FieldData) {
	setString(d, "client_id", &c.ClientID)
	setString(d, "client_secret", &c.ClientSecret)
	setString(d, "auth_method", &c.AuthMethod)
	setString(d, "client_key", &c.ClientKey)
	setString(d, "client_key_alg", &c.ClientKeyAlg)
	setString(d, "client_key_kid", &c.ClientKeyKID)
	setString(d, "client_key_name", &c.ClientKeyName)
	setString(d, "client_cert", &c.ClientCert)
	setString(d, "client_secret_next", &c.ClientSecretNext)
}

func (c clientCredentials) validate() error {
	for field, v := range map[string]string{"client_id": c.ClientID, "client_secret": c.ClientSecret, "client_secret_next": c.ClientSecretNext, "client_key_alg": c.ClientKeyAlg, "client_key_kid": c.ClientKeyKID, "client_key_name": c.ClientKeyName} {
		if err := validateLength(field, v, maxFieldBytes); err != nil {
			return err
		}
	}
	if c.ClientSecretNext != "" && c.ClientSecret == "" {
		return fieldErrorf("client_secret_next", "follows a client_secret; set client_secret (the current one) too")
	}
	if c.ClientKeyName != "" {
		if c.ClientKey != "" {
			return fieldErrorf("client_key_name", "and client_key both give the private_key_jwt key; set one of them (write the other as \"\")")
		}
		if c.ClientKeyAlg != "" || c.ClientKeyKID != "" {
			return fieldErrorf("client_key_name", "names a mount key, which has its own alg and kid: client_key_alg and client_key_kid apply only to client_key")
		}
	}
	if c.AuthMethod != "" {
		if err := validateChoice("auth_method", c.AuthMethod, oauthclient.AuthMethods); err != nil {
			return err
		}
	}
	if c.ClientKey != "" || c.ClientKeyAlg != "" {
		if _, err := c.signingKey(); err != nil {
			return err
		}
	}
	if c.ClientCert != "" {
		if err := validateLength("client_cert", c.ClientCert, maxPEMBytes); err != nil {
			return err
		}
		keyPEM := c.ClientKey
		if keyPEM == "" {
			// Checked against the mount key when it is used; here only the certificate.
			keyPEM = "-"
		}
		if _, err := parseClientCertificate(c.ClientCert, keyPEM, "client_key"); err != nil && (c.ClientKey != "" || isField(err, "client_cert")) {
			return err
		}
	}
	return nil
}

func isField(err error, field string) bool {
	var fe *fieldError
	return errors.As(err, &fe) && fe.field == field
}

// signingKey parses the private_key_jwt key; its errors name client_key or client_key_alg.
func (c clientCredentials) signingKey() (*oauthclient.SigningKey, error) {
	if c.ClientKey == "" {
		return nil, fieldErrorf("client_key", "private_key_jwt needs a PEM private key")
	}
	if err := validateLength("client_key", c.ClientKey, maxPEMBytes); err != nil {
		return nil, err
	}
	return parseKeyField("client_key", "client_key_alg", c.ClientKey, c.ClientKeyAlg, c.ClientKeyKID, true)
}

// parseKeyField parses a key, blaming field for an unreadable key and algField for an algorithm
// that does not fit it.
func parseKeyField(field, algField, keyText, alg, kid string, pemOnly bool) (*oauthclient.SigningKey, error) {
	if pemOnly && !oauthclient.IsPEM(keyText) {
		return nil, fieldErrorf(field, "must be a PEM private key (RSA or EC)")
	}
	key, err := oauthclient.ParseSigningKey(keyText, alg, kid)
	if err == nil {
		return key, nil
	}
	var keyErr *oauthclient.KeyError
	if errors.As(err, &keyErr) {
		return nil, fieldErrorf(field, "%s", keyErr.Msg)
	}
	return nil, fieldErrorf(algField, "%v", err)
}

// chooseAuthMethod picks the client authentication for a request: the explicit choice, else the
// first method the provider supports that the credentials at hand can perform.
func chooseAuthMethod(creds clientCredentials, cfg *configEntry) (string, error) {
	if creds.AuthMethod != "" {
		return creds.AuthMethod, nil
	}
	var supported []string
	if cfg.Discovered != nil {
		supported = cfg.Discovered.TokenEndpointAuthMethodsSupported
	}
	if len(supported) == 0 {
		// RFC 8414 §2: the default is client_secret_basic.
		supported = []string{oauthclient.AuthClientSecretBasic}
		if creds.ClientSecret == "" {
			supported = append(supported, oauthclient.AuthPrivateKeyJWT, oauthclient.AuthNone)
		}
	}
	for _, m := range oauthclient.AuthMethods {
		if slices.Contains(supported, m) && creds.canUse(m) {
			return m, nil
		}
	}
	return "", fieldErrorf("auth_method", "none of the provider's token_endpoint_auth_methods_supported (%v) fits the credentials given; set auth_method and its credentials", supported)
}

func (c clientCredentials) canUse(method string) bool {
	switch method {
	case oauthclient.AuthClientSecretBasic, oauthclient.AuthClientSecretPost, oauthclient.AuthClientSecretJWT:
		return c.ClientSecret != ""
	case oauthclient.AuthPrivateKeyJWT:
		return c.ClientKey != "" || c.ClientKeyName != ""
	case oauthclient.AuthTLSClientAuth:
		return c.ClientCert != "" && (c.ClientKey != "" || c.ClientKeyName != "")
	case oauthclient.AuthSelfSignedTLSClientAuth:
		return c.ClientKeyName != "" || (c.ClientCert != "" && c.ClientKey != "")
	}
	return !c.hasCredential()
}

// hasCredential reports whether a secret or a key is set: a role that has one uses none of the
// config's.
func (c clientCredentials) hasCredential() bool {
	return c.ClientSecret != "" || c.ClientKey != "" || c.ClientKeyName != "" || c.ClientCert != ""
}

// effectiveCredentials merges the role's client settings over the config's.
func (r *roleEntry) effectiveCredentials(cfg *configEntry) clientCredentials {
	out := r.clientCredentials
	if cfg == nil {
		return out
	}
	if !out.hasCredential() {
		out = cfg.clientCredentials
		out.ClientID, out.AuthMethod = r.ClientID, r.AuthMethod
	}
	out.ClientID = firstNonEmpty(out.ClientID, cfg.ClientID)
	out.AuthMethod = firstNonEmpty(out.AuthMethod, cfg.AuthMethod)
	return out
}

// validateClientAuth checks that the client can authenticate the way it is told to, with the
// credentials of the role or, failing those, of the config.
func (r *roleEntry) validateClientAuth(cfg *configEntry) error {
	creds := r.effectiveCredentials(cfg)
	if r.AuthMethod == "" && (cfg == nil || cfg.AuthMethod == "") {
		return nil // chosen at request time from the provider's metadata
	}
	switch creds.AuthMethod {
	case "client_secret_basic", "client_secret_post", "client_secret_jwt":
		if creds.ClientSecret == "" {
			return fieldErrorf("client_secret", "auth_method %s needs a client_secret (on the role or the config)", creds.AuthMethod)
		}
	case "private_key_jwt":
		if creds.ClientKeyName != "" {
			break
		}
		if _, err := creds.signingKey(); err != nil {
			return err
		}
	case oauthclient.AuthTLSClientAuth:
		if creds.ClientCert == "" {
			return fieldErrorf("client_cert", "auth_method tls_client_auth needs the client's certificate")
		}
		if creds.ClientKey == "" && creds.ClientKeyName == "" {
			return fieldErrorf("client_key", "auth_method tls_client_auth needs the certificate's private key (client_key, or a mount key as client_key_name)")
		}
	case oauthclient.AuthSelfSignedTLSClientAuth:
		if !creds.canUse(creds.AuthMethod) {
			return fieldErrorf("client_key_name", "auth_method self_signed_tls_client_auth needs a mount key (client_key_name), whose self-signed certificate is used, or client_cert with client_key")
		}
	}
	if creds.AuthMethod == "client_secret_jwt" && len(creds.ClientSecret) < 32 {
		return fieldErrorf("client_secret", "client_secret_jwt signs with HS256, which needs a client_secret of at least 32 bytes")
	}
	return nil
}
