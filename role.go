package oauth

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauth1"
)

const (
	defaultTokenTTL     = time.Hour
	defaultAssertionTTL = 5 * time.Minute
)

// reservedTokenParams are set by the plugin itself; token_params may not override them.
var reservedTokenParams = []string{"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope", "username", "password", "refresh_token", "assertion",
	"subject_token", "subject_token_type", "actor_token", "actor_token_type", "requested_token_type"}

// reservedClaims are set on every assertion; assertion_claims may not override them.
var reservedClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti"}

// roleEntry is one application's grant, stored at "roles/<name>".
type roleEntry struct {
	entryFormat
	// Incarnation is random per creation: a role deleted and created again under its name
	// never inherits a token of its previous life.
	Incarnation string `json:"incarnation,omitempty"`
	GrantType   string `json:"grant_type"`
	clientCredentials

	Scopes      []string          `json:"scopes,omitempty"`
	Audience    string            `json:"audience,omitempty"`
	Resource    []string          `json:"resource,omitempty"`
	TokenParams map[string]string `json:"token_params,omitempty"`
	// SecretTokenParams are token_params whose values are secrets: write-only.
	SecretTokenParams map[string]string `json:"secret_token_params,omitempty"`

	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	assertionSettings
	exchangeSettings
	oauth1Settings

	// DPoP binds the role's tokens to DPoPKey (RFC 9449): a P-256 key generated in Vault that
	// never leaves it. Turning dpop on makes a new key; turning it off drops the key.
	DPoP    bool   `json:"dpop,omitempty"`
	DPoPKey string `json:"dpop_key,omitempty"`

	// RedirectURI, AuthParams and ResponseMode shape the authorization request of
	// authorization_code roles; an empty ResponseMode is query.
	RedirectURI  string            `json:"redirect_uri,omitempty"`
	AuthParams   map[string]string `json:"auth_params,omitempty"`
	ResponseMode string            `json:"response_mode,omitempty"`
	// Authorization is the person's authorization that the role's refresh token chain started
	// from (authorization_code, device_code); nil until one completes.
	Authorization *authorization `json:"authorization,omitempty"`

	DefaultTTL time.Duration `json:"default_ttl"`
	MaxTTL     time.Duration `json:"max_ttl"`
	// Lease says whether creds answers are leases; nil takes the config's.
	Lease *bool `json:"lease,omitempty"`
	refreshPolicy
	// RefreshOverrides names the refresh settings the role sets itself, even to 0; the others
	// come from the config. (Roles stored before it override with every non-zero setting.)
	RefreshOverrides []string `json:"refresh_overrides,omitempty"`
}

// assertionSettings build the RFC 7523 assertion of the jwt_bearer grant.
type assertionSettings struct {
	AssertionKey string `json:"assertion_key,omitempty"`
	// AssertionKeyName names a mount key that signs the assertion instead of AssertionKey.
	AssertionKeyName  string         `json:"assertion_key_name,omitempty"`
	AssertionAlg      string         `json:"assertion_alg,omitempty"`
	AssertionKID      string         `json:"assertion_kid,omitempty"`
	AssertionIssuer   string         `json:"assertion_issuer,omitempty"`
	AssertionSubject  string         `json:"assertion_subject,omitempty"`
	AssertionAudience string         `json:"assertion_audience,omitempty"`
	AssertionTTL      time.Duration  `json:"assertion_ttl"`
	AssertionClaims   map[string]any `json:"assertion_claims,omitempty"`
}

// update applies the fields present in the request.
func (r *roleEntry) update(d *framework.FieldData) error {
	was := r.GrantType
	setString(d, "grant_type", &r.GrantType)
	if was == grantOAuth1 && r.GrantType != grantOAuth1 {
		r.oauth1Settings = oauth1Settings{}
	}
	r.oauth1Settings.update(d)
	if r.GrantType == grantOAuth1 && r.SignatureMethod == "" {
		r.SignatureMethod = oauth1.HMACSHA1
	}
	if v, ok := d.GetOk("dpop"); ok {
		if err := r.setDPoP(v.(bool)); err != nil {
			return err
		}
	}
	r.clientCredentials.update(d)
	if v, ok := d.GetOk("scopes"); ok {
		r.Scopes = nonEmpty(v.([]string))
	}
	setString(d, "audience", &r.Audience)
	if v, ok := d.GetOk("resource"); ok {
		r.Resource = nonEmpty(v.([]string))
	}
	if v, ok := d.GetOk("token_params"); ok {
		r.TokenParams = v.(map[string]string)
	}
	if v, ok := d.GetOk("secret_token_params"); ok {
		r.SecretTokenParams = v.(map[string]string)
	}
	setString(d, "username", &r.Username)
	setString(d, "password", &r.Password)
	setString(d, "refresh_token", &r.RefreshToken)
	setString(d, "assertion_key", &r.AssertionKey)
	setString(d, "assertion_key_name", &r.AssertionKeyName)
	setString(d, "assertion_alg", &r.AssertionAlg)
	setString(d, "assertion_kid", &r.AssertionKID)
	setString(d, "assertion_issuer", &r.AssertionIssuer)
	setString(d, "assertion_subject", &r.AssertionSubject)
	setString(d, "assertion_audience", &r.AssertionAudience)
	setDuration(d, "assertion_ttl", &r.AssertionTTL)
	setString(d, "subject_role", &r.SubjectRole)
	setString(d, "actor_role", &r.ActorRole)
	if v, ok := d.GetOk("requested_token_type"); ok {
		r.RequestedTokenType = tokenTypeURN(v.(string))
	}
	if v, ok := d.GetOk("assertion_claims"); ok {
		claims, err := parseClaims(v.(string))
		if err != nil {
			return err
		}
		r.AssertionClaims = claims
	}
	setString(d, "redirect_uri", &r.RedirectURI)
	if v, ok := d.GetOk("auth_params"); ok {
		params, err := parsePairs("auth_params", nonEmpty(v.([]string)))
		if err != nil {
			return err
		}
		r.AuthParams = params
	}
	setString(d, "response_mode", &r.ResponseMode)
	setDuration(d, "default_ttl", &r.DefaultTTL)
	setDuration(d, "max_ttl", &r.MaxTTL)
	setBool(d, "lease", &r.Lease)
	r.refreshPolicy.update(d)
	for _, f := range []string{"refresh_buffer", "refresh_fraction"} {
		if _, ok := d.GetOk(f); ok && !slices.Contains(r.RefreshOverrides, f) {
			r.RefreshOverrides = append(r.RefreshOverrides, f)
		}
	}
	return nil
}

// parsePairs reads key=value pairs.
func parsePairs(field string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fieldErrorf(field, "%q is not key=value", clipInput(p))
		}
		out[k] = v
	}
	return out, nil
}

func parseClaims(text string) (map[string]any, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	if err := validateLength("assertion_claims", text, maxFieldBytes); err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(text), &claims); err != nil || claims == nil {
		return nil, fieldErrorf("assertion_claims", "must be a JSON object")
	}
	for _, c := range reservedClaims {
		if _, ok := claims[c]; ok {
			return nil, fieldErrorf("assertion_claims", "must not set %q: the plugin sets %s itself", c, strings.Join(reservedClaims, ", "))
		}
	}
	return claims, nil
}

func nonEmpty(values []string) []string {
	out := values[:0:0]
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// validate checks the role on its own and against the config's defaults, when there is one.
func (r *roleEntry) validate(cfg *configEntry) error {
	if err := validateChoice("grant_type", r.GrantType, supportedGrants); err != nil {
		return err
	}
	if err := r.clientCredentials.validate(); err != nil {
		return err
	}
	if err := r.oauth1Only(); err != nil {
		return err
	}
	for _, s := range r.Scopes {
		if !validScopeToken(s) {
			return fieldErrorf("scopes", "%q is not a valid scope (RFC 6749 §3.3: printable ASCII without spaces, quotes or backslashes)", clipInput(s))
		}
	}
	for field, v := range map[string]string{"audience": r.Audience, "username": r.Username, "password": r.Password, "refresh_token": r.RefreshToken, "assertion_issuer": r.AssertionIssuer, "assertion_subject": r.AssertionSubject, "assertion_audience": r.AssertionAudience, "assertion_kid": r.AssertionKID, "assertion_key_name": r.AssertionKeyName} {
		if err := validateLength(field, v, maxFieldBytes); err != nil {
			return err
		}
	}
	for _, res := range r.Resource {
		// RFC 8707 §2: an absolute URI without a fragment.
		if err := validateResource(res); err != nil {
			return err
		}
	}
	if err := validateTokenParams("token_params", r.TokenParams, reservedTokenParams); err != nil {
		return err
	}
	if err := validateTokenParams("secret_token_params", r.SecretTokenParams, reservedTokenParams); err != nil {
		return err
	}
	if err := validateTokenParams("auth_params", r.AuthParams, reservedAuthParams); err != nil {
		return err
	}
	if err := validateEndpointURL("redirect_uri", r.RedirectURI); err != nil {
		return err
	}
	if err := validateChoice("response_mode", r.responseMode(), responseModes); err != nil {
		return err
	}
	for k := range r.SecretTokenParams {
		if _, ok := r.TokenParams[k]; ok {
			return fieldErrorf("secret_token_params", "%q is also in token_params; give each parameter once", clipInput(k))
		}
	}
	for field, v := range map[string]time.Duration{"default_ttl": r.DefaultTTL, "max_ttl": r.MaxTTL} {
		if err := validateDuration(field, v, maxDuration); err != nil {
			return err
		}
	}
	if r.DefaultTTL == 0 {
		return fieldErrorf("default_ttl", "must be more than 0")
	}
	if err := r.refreshPolicy.validate(); err != nil {
		return err
	}
	if r.GrantType != grantTokenExchange {
		for field, v := range map[string]string{"subject_role": r.SubjectRole, "actor_role": r.ActorRole, "requested_token_type": r.RequestedTokenType} {
			if v != "" {
				return fieldErrorf(field, "applies only to grant_type=%s", grantTokenExchange)
			}
		}
	}
	if r.GrantType != grantAuthorizationCode && r.responseMode() != responseModeQuery {
		return fieldErrorf("response_mode", "%s applies only to grant_type=%s", r.ResponseMode, grantAuthorizationCode)
	}
	if err := grantFlows[r.GrantType].validate(r, cfg); err != nil {
		return err
	}
	return r.validateClientAuth(cfg)
}

// validScopeToken follows RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" || len(s) > 1024 {
		return false
	}
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func validateResource(res string) error {
	if len(res) > 2048 || !strings.Contains(res, "://") || strings.Contains(res, "#") {
		return fieldErrorf("resource", "%q is not an absolute URI without a fragment (RFC 8707)", clipInput(res))
	}
	return nil
}

func validateTokenParams(field string, params map[string]string, reserved []string) error {
	for k, v := range params {
		if k == "" {
			return fieldErrorf(field, "a parameter has an empty name")
		}
		if slices.Contains(reserved, k) {
			return fieldErrorf(field, "%q is set by the plugin and cannot be overridden; reserved: %s", clipInput(k), strings.Join(reserved, ", "))
		}
		if len(k)+len(v) > maxFieldBytes {
			return fieldErrorf(field, "parameter %q is longer than %d bytes", clipInput(k), maxFieldBytes)
		}
	}
	return nil
}

// sortedKeys lists a map's keys in order (nil for none).
func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// authorization records a person's completed authorization of a role.
type authorization struct {
	// ID is random per authorization: it starts a new refresh token chain (tokenBinding's
	// refreshSource), so a grant of the previous chain still in flight cannot be stored over it.
	ID           string    `json:"id"`
	AuthorizedAt time.Time `json:"authorized_at"`
	// Subject is the ID token's sub, when one came back.
	Subject string `json:"sub,omitempty"`
}

// randomID is 128 random bits, hex-encoded.
func randomID() (string, error) {
	var buf [16]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf[:]), nil
}

// leased reports whether the role's creds answers are leases: its own setting, else the config's,
// else true.
func (r *roleEntry) leased(cfg *configEntry) bool {
	switch {
	case r.Lease != nil:
		return *r.Lease
	case cfg != nil && cfg.Lease != nil:
		return *cfg.Lease
	default:
		return true
	}
}
