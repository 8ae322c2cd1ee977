package oauth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Bounds on a request described to sign/.
const (
	maxSignURLBytes = 8 << 10
	maxSignParams   = 1000
)

func pathSign(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "sign/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "sign",
			OperationSuffix: "request",
		},
		Fields: map[string]*framework.FieldSchema{
			"name":      nameField,
			"method":    {Type: framework.TypeString, Default: http.MethodGet, Description: "HTTP method of the request to sign."},
			"url":       {Type: framework.TypeString, Required: true, Description: "Absolute URL of the request, with its query string."},
			"params":    {Type: framework.TypeStringSlice, Description: "oauth1: form-encoded body parameters that take part in the signature, each name=value (decoded); a name may repeat. The URL's query parameters take part by themselves."},
			"body_hash": {Type: framework.TypeString, Description: "oauth1: oauth_body_hash of a body that is not form-encoded: the base64 SHA-1 (SHA-256 for HMAC-SHA256) of the body."},
			"nonce":     {Type: framework.TypeString, Description: "dpop: the DPoP-Nonce the resource server sent, for the proof's nonce claim."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			// Forwarded: a DPoP role's token may have to be obtained first.
			logical.UpdateOperation: forwarded(operation("Sign one outgoing request: the OAuth 1.0a Authorization header, or a DPoP token and proof.", b.pathSignWrite, http.StatusOK, signFields)),
		},
		HelpSynopsis:    pathSignHelpSyn,
		HelpDescription: pathSignHelpDesc,
	}
}

// signRequest is the request an application describes to sign/.
type signRequest struct {
	method, url     string
	params          []string
	bodyHash, nonce string
}

func (b *backend) pathSignWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, false)
	if err != nil {
		return errorResponse(err)
	}
	sr := signRequest{
		method:   d.Get("method").(string),
		url:      d.Get("url").(string),
		params:   d.Get("params").([]string),
		bodyHash: d.Get("body_hash").(string),
		nonce:    d.Get("nonce").(string),
	}
	if err := sr.validate(target.role); err != nil {
		return errorResponse(err)
	}
	role := target.role
	var data map[string]any
	switch {
	case role.GrantType == grantOAuth1:
		data, err = b.signOAuth1(target.name, role, sr)
	case role.DPoP:
		if target.cfg == nil {
			return errorResponse(errNoConfig)
		}
		out, err := b.tokenFor(ctx, req.Storage, target.name, role, target.cfg, 0)
		if err != nil {
			return nil, err
		}
		if out.token == nil {
			resp, err := grantErrorResponse(out.err)
			return withMount(resp, req.MountPoint), err
		}
		data, err = b.signDPoP(target.name, role, out.token, sr)
		if err != nil {
			return errorResponse(err)
		}
		resp := &logical.Response{Data: data}
		for _, w := range out.warnings(b.now(), 0) {
			resp.AddWarning(w)
		}
		if out.token.TokenType != "DPoP" {
			resp.AddWarning(fmt.Sprintf("the provider issued a %s token, not a DPoP-bound one: it ignored the proofs (does it support DPoP?)", out.token.TokenType))
		}
		return resp, nil
	default:
		return errorResponse(fieldErrorf("name", "role %q sends bearer tokens, which need no signature: read <mount>/creds/%s (or set dpop=true on it)", target.name, target.name))
	}
	if err != nil {
		resp, err := errorResponse(err)
		return withMount(resp, req.MountPoint), err
	}
	return &logical.Response{Data: data}, nil
}

// validate checks the described request, and that it gives only what the role's kind uses.
func (sr signRequest) validate(role *roleEntry) error {
	if !validMethod(sr.method) {
		return fieldErrorf("method", "%q is not an HTTP method", clipInput(sr.method))
	}
	if _, err := parseRequestURL(sr.url); err != nil {
		return err
	}
	if role.GrantType != grantOAuth1 {
		if len(sr.params) > 0 {
			return fieldErrorf("params", "only OAuth 1.0a signatures cover parameters")
		}
		if sr.bodyHash != "" {
			return fieldErrorf("body_hash", "is for oauth1 roles")
		}
		return validateLength("nonce", sr.nonce, 1024)
	}
	if sr.nonce != "" {
		return fieldErrorf("nonce", "is for dpop roles")
	}
	if len(sr.params) > maxSignParams {
		return fieldErrorf("params", "at most %d parameters", maxSignParams)
	}
	for _, p := range sr.params {
		name, _, _ := cutParam(p)
		if name == "" {
			return fieldErrorf("params", "each parameter is name=value with a name")
		}
		if strings.HasPrefix(name, "oauth_") {
			return fieldErrorf("params", "%q is a protocol parameter, which the plugin sets itself", clipInput(name))
		}
		if err := validateLength("params", p, maxFieldBytes); err != nil {
			return err
		}
	}
	return nil
}

// cutParam splits name=value; a bare name has the empty value (RFC 5849 §3.4.1.3.1).
func cutParam(p string) (name, value string, hasValue bool) {
	return strings.Cut(p, "=")
}

// parseRequestURL accepts the absolute http or https URL of a request to sign.
func parseRequestURL(raw string) (*url.URL, error) {
	if err := validateLength("url", raw, maxSignURLBytes); err != nil {
		return nil, err
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fieldErrorf("url", "must be an absolute http or https URL")
	}
	if u.User != nil {
		return nil, fieldErrorf("url", "must not carry credentials")
	}
	return u, nil
}

// validMethod is an RFC 9110 method token.
func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for _, c := range m {
		alnum := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && !strings.ContainsRune("!#$%&'*+-.^_`|~", c) {
			return false
		}
	}
	return true
}

// signFields is what sign/ answers.
var signFields = map[string]*framework.FieldSchema{
	"authorization":   {Type: framework.TypeString, Description: "Value of the request's Authorization header: OAuth ... or DPoP <access token>."},
	"oauth_nonce":     {Type: framework.TypeString, Description: "oauth1: the nonce signed."},
	"oauth_timestamp": {Type: framework.TypeString, Description: "oauth1: the timestamp signed."},
	"dpop":            {Type: framework.TypeString, Description: "dpop: value of the request's DPoP header, a proof for this request."},
	"expires_at":      {Type: framework.TypeString, Description: "dpop: when the access token expires (RFC 3339)."},
}

const pathSignHelpSyn = `Sign one outgoing request with the role's credentials.`

const pathSignHelpDesc = `
Returns the headers of one request to a resource server, so that no secret leaves Vault.

For a grant_type=oauth1 role: describe the request with method, url (its query parameters take
part), params (form-encoded body parameters, name=value, repeatable) or body_hash (for a body that
is not form-encoded); the answer is the Authorization header value ("OAuth ..."), signed with the
consumer and token secrets (or the RSA key), with its oauth_nonce and oauth_timestamp.

For a role with dpop=true: the answer is authorization ("DPoP <access token>") and dpop, a proof
for this method and url signed with the role's key (with nonce when given: the DPoP-Nonce the
resource server sent). Send each proof once.
`
