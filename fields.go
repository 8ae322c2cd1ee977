package oauth

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Bounds on operator input: generous for real use, small enough that nothing hostile gets stored.
const (
	maxFieldBytes   = 16 << 10
	maxPEMBytes     = 64 << 10
	maxTimeout      = 5 * time.Minute
	maxDuration     = 365 * 24 * time.Hour
	maxAssertionTTL = 24 * time.Hour
)

// namePattern captures a role name in a path; validateRoleName decides whether it is a good one.
const namePattern = `(?P<name>[^/]+)`

// roleNameRegex is what a role name may be: letters, digits, '-', '_', '.', starting and ending
// with a letter or digit.
var roleNameRegex = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$`)

// secretFields are write-only and never echoed, not even in an error.
var secretFields = []string{"client_secret", "client_secret_next", "client_key", "password", "refresh_token", "assertion_key", "subject_token", "code", "state", "consumer_secret", "consumer_private_key", "token", "token_secret", "oauth_verifier"}

// secretPairsField holds key=value pairs whose values are secrets.
const secretPairsField = "secret_token_params"

// rejectMistypedSecrets refuses a secret sent as a list or a map (as the CLI sends a key given
// twice), and secret pairs that are not key=value, before the SDK converts them, because the
// SDK's conversion errors quote the value.
func rejectMistypedSecrets(data map[string]any) error {
	for _, field := range secretFields {
		switch data[field].(type) {
		case nil, string, json.Number, bool, int, int64, float64:
		default:
			return fieldErrorf(field, "must be a single string (was it given more than once?)")
		}
	}
	var pairs []any
	switch v := data[secretPairsField].(type) {
	case nil:
	case map[string]any:
		for _, value := range v {
			if _, ok := value.(string); !ok {
				return fieldErrorf(secretPairsField, "each value must be a string")
			}
		}
	case string:
		pairs = []any{v}
	case []any:
		pairs = v
	default:
		return fieldErrorf(secretPairsField, "must be key=value pairs or a map")
	}
	for _, p := range pairs {
		if s, ok := p.(string); !ok || !strings.Contains(s, "=") || strings.HasPrefix(s, "=") {
			return fieldErrorf(secretPairsField, "each entry must be key=value with a non-empty key")
		}
	}
	return nil
}

// rejectUnknownFields turns Vault's silent "ignored parameters" warning into an error, so a
// misspelt field is never mistaken for a setting.
func rejectUnknownFields(req *logical.Request, d *framework.FieldData) error {
	var unknown []string
	for k := range req.Data {
		if _, ok := d.Schema[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	known := make([]string, 0, len(d.Schema))
	for k := range d.Schema {
		if k != "name" {
			known = append(known, k)
		}
	}
	sort.Strings(known)
	return fieldErrorf(strings.Join(unknown, ", "), "unknown field; valid fields are %s", strings.Join(known, ", "))
}

func validateRoleName(name string) error {
	if !roleNameRegex.MatchString(name) {
		return fieldErrorf("name", "%q is not a valid role name: use 1-128 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", clipInput(name))
	}
	return nil
}

// validateEndpointURL accepts an absolute https URL, or http to a loopback host (for local
// providers), with no credentials or fragment in it.
func validateEndpointURL(field, raw string) error {
	if raw == "" {
		return nil
	}
	if len(raw) > 2048 {
		return fieldErrorf(field, "URL is longer than 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || u.Opaque != "" {
		return fieldErrorf(field, "%s is not an absolute URL", quoteURL(raw))
	}
	if u.User != nil {
		return fieldErrorf(field, "URL must not carry credentials")
	}
	if u.Fragment != "" {
		return fieldErrorf(field, "URL must not have a fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fieldErrorf(field, "http is allowed only for loopback hosts; use https for %s", u.Hostname())
		}
	default:
		return fieldErrorf(field, "scheme %q is not allowed; use https", u.Scheme)
	}
	if u.Port() != "" {
		if _, err := net.LookupPort("tcp", u.Port()); err != nil {
			return fieldErrorf(field, "port %q is not valid", u.Port())
		}
	}
	return nil
}

// quoteURL echoes a URL in an error, unless it may carry credentials (userinfo before an '@').
func quoteURL(raw string) string {
	if strings.Contains(raw, "@") {
		return "the URL (not shown: it may carry credentials)"
	}
	return strconv.Quote(clipInput(raw))
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validateDuration(field string, d, max time.Duration) error {
	if d < 0 {
		return fieldErrorf(field, "must not be negative")
	}
	if d > max {
		return fieldErrorf(field, "must be at most %s", max)
	}
	return nil
}

func validateChoice(field, value string, choices []string) error {
	if slices.Contains(choices, value) {
		return nil
	}
	return fieldErrorf(field, "%q is not supported; choose one of %s", clipInput(value), strings.Join(choices, ", "))
}

func validateLength(field, value string, max int) error {
	if len(value) > max {
		return fieldErrorf(field, "is %d bytes; at most %d are allowed", len(value), max)
	}
	return nil
}

// clipInput shortens operator input that is echoed in an error. Only non-secret fields are
// ever echoed.
func clipInput(s string) string {
	if r := []rune(s); len(r) > 64 {
		return string(r[:64]) + "…"
	}
	return s
}

func setString(d *framework.FieldData, field string, dst *string) {
	if v, ok := d.GetOk(field); ok {
		*dst = v.(string)
	}
}

// setBool sets *dst when the request has the field; a nil *dst means it was never set.
func setBool(d *framework.FieldData, field string, dst **bool) {
	if v, ok := d.GetOk(field); ok {
		b := v.(bool)
		*dst = &b
	}
}

func setDuration(d *framework.FieldData, field string, dst *time.Duration) {
	if v, ok := d.GetOk(field); ok {
		*dst = time.Duration(v.(int)) * time.Second
	}
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// addClientFields adds the client identity and authentication fields shared by config and roles.
func addClientFields(fields map[string]*framework.FieldSchema, scope string) {
	fields["client_id"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": OAuth client ID."}
	fields["client_secret"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": OAuth client secret. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}}
	fields["auth_method"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": client authentication at the token endpoint: client_secret_basic, client_secret_post, client_secret_jwt, private_key_jwt, tls_client_auth, self_signed_tls_client_auth or none. Chosen from the provider's metadata when unset."}
	fields["client_key"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": PEM private key (RSA or EC) for private_key_jwt. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}}
	fields["client_key_alg"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": JWS alg for private_key_jwt; defaults from the key (RS256, ES256)."}
	fields["client_key_kid"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": JWS kid header for private_key_jwt."}
	fields["client_cert"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": PEM client certificate (chain) for tls_client_auth (RFC 8705), whose private key is client_key or the mount key client_key_name; self_signed_tls_client_auth with a mount key needs none (the key's self-signed certificate is used)."}
	fields["client_key_name"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": mount key (keys/<name>) that signs private_key_jwt, instead of client_key; the JWT carries its kid."}
	fields["client_secret_next"] = &framework.FieldSchema{Type: framework.TypeString, Description: scope + ": the client secret that follows client_secret: tried when the provider refuses client_secret as invalid_client, and promoted to client_secret once it works. Write-only.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}}
}

func addRefreshFields(fields map[string]*framework.FieldSchema) {
	fields["refresh_buffer"] = &framework.FieldSchema{Type: framework.TypeDurationSecond, Description: "Refresh a token once it has less than this left (or less than refresh_fraction of its lifetime, whichever is more)."}
	fields["refresh_fraction"] = &framework.FieldSchema{Type: framework.TypeFloat, Description: "Refresh a token once less than this fraction of its lifetime is left (0 to 0.9, default 0.5)."}
}

// rfc3339 formats t in UTC, or gives "" for the zero time.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// withFieldValidator runs what every operation checks before its handler: a valid role name
// where the path has one, and no field the path does not know.
func withFieldValidator(f framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		if _, named := d.Schema["name"]; named {
			if err := validateRoleName(d.Get("name").(string)); err != nil {
				return errorResponse(err)
			}
		}
		if err := rejectUnknownFields(req, d); err != nil {
			return errorResponse(err)
		}
		return f(ctx, req, d)
	}
}

// operation is one path operation as Vault and its OpenAPI document see it: the handler behind
// withFieldValidator, a summary, and the answer it gives when it succeeds.
func operation(summary string, f framework.OperationFunc, status int, fields map[string]*framework.FieldSchema) *framework.PathOperation {
	return &framework.PathOperation{
		Callback:  withFieldValidator(f),
		Summary:   summary,
		Responses: map[int][]framework.Response{status: {{Description: http.StatusText(status), Fields: fields}}},
	}
}

// forwarded marks an operation that calls the provider or writes storage: performance standbys
// and secondaries hand it to the node that may write.
func forwarded(op *framework.PathOperation) *framework.PathOperation {
	op.ForwardPerformanceStandby, op.ForwardPerformanceSecondary = true, true
	return op
}

// nameField is the role name in a path.
var nameField = &framework.FieldSchema{Type: framework.TypeString, Required: true, Description: "Name of the role."}

// boolOr is *p, or def when p is nil.
func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}
