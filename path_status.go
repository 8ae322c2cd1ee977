package oauth

import (
	"context"
	"maps"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathRoleStatus(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "roles/" + namePattern + "/status$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "read",
			OperationSuffix: "role-status",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": nameField,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: operation("Read the refresh state of the role's token (never the token).", b.pathRoleStatusRead, http.StatusOK, statusFields),
		},
		HelpSynopsis:    pathRoleStatusHelpSyn,
		HelpDescription: pathRoleStatusHelpDesc,
	}
}

func (b *backend) pathRoleStatusRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, false)
	if err != nil {
		return errorResponse(err)
	}
	tok, err := b.currentToken(ctx, req.Storage, target.name)
	if err != nil {
		return nil, err
	}
	data := b.roleStatus(ctx, req.Storage, target.name, target.role, tok, target.cfg)
	if grantFlows[target.role.GrantType].startPath != "" || target.role.threeLegged() {
		p, err := b.pending(ctx, req.Storage, target.name)
		if err != nil {
			return nil, err
		}
		b.describeAuthorization(target.role, p, data)
	}
	return &logical.Response{Data: data}, nil
}

// describeAuthorization adds where a person's authorization of the role stands: authorized once
// one completed; else the flow under way is pending, denied or expired (pending too when none
// was started yet).
func (b *backend) describeAuthorization(role *roleEntry, p *pendingAuthorization, data map[string]any) {
	state := "pending"
	switch {
	case role.Authorization != nil:
		state = "authorized"
		data["authorized_at"] = rfc3339(role.Authorization.AuthorizedAt)
		data["sub"] = role.Authorization.Subject
	case p == nil:
	case p.Outcome != "":
		state = p.Outcome
	case !b.now().Before(p.ExpiresAt):
		state = outcomeExpired
	}
	data["authorization"] = state
	if p != nil && p.Kind == kindDevice {
		data["last_poll"] = p.LastPoll
		data["last_poll_at"] = rfc3339(p.LastPollAt)
	}
}

// roleStatus describes the role's token and refresh state, never the token itself.
func (b *backend) roleStatus(ctx context.Context, s logical.Storage, name string, role *roleEntry, tok *tokenEntry, cfg *configEntry) map[string]any {
	now := b.now()
	if tok == nil {
		tok = &tokenEntry{}
	}
	data := map[string]any{
		"expires_at":           "",
		"expires_in":           int64(tok.remaining(now).Seconds()),
		"last_refresh":         rfc3339(tok.ObtainedAt),
		"next_refresh":         "",
		"last_error":           tok.LastError,
		"last_error_at":        rfc3339(tok.LastErrorAt),
		"consecutive_failures": tok.ConsecutiveFailures,
		"grants":               tok.Grants,
		"failures":             tok.Failures,
		// The secret rotation of the role's client, whether the role or the config holds it.
		"client_secret_promoted_at": rfc3339(role.effectiveCredentials(cfg).ClientSecretPromotedAt),
	}
	if tok.AccessToken != "" {
		data["expires_at"] = rfc3339(tok.ExpiresAt)
	}
	role.describeDPoP(data)
	if plan := b.plan(ctx, s, name, role, tok, cfg); !plan.onRead {
		// The refresher acts at the first tick at or after this moment.
		data["next_refresh"] = rfc3339(laterOf(plan.at, now))
	}
	return data
}

// statusFields is what a status read answers.
var statusFields = func() map[string]*framework.FieldSchema {
	fields := maps.Clone(dpopStatusFields)
	maps.Copy(fields, tokenStatusFields)
	return fields
}()

// tokenStatusFields describe the role's token.
var tokenStatusFields = map[string]*framework.FieldSchema{
	"expires_at":                {Type: framework.TypeString, Description: "When the cached token expires (RFC 3339)."},
	"expires_in":                {Type: framework.TypeInt, Description: "Seconds the cached token has left."},
	"last_refresh":              {Type: framework.TypeString, Description: "When the cached token was obtained."},
	"next_refresh":              {Type: framework.TypeString, Description: "When the refresher next replaces it (empty: replaced on read)."},
	"last_error":                {Type: framework.TypeString, Description: "The last failure, without secrets."},
	"last_error_at":             {Type: framework.TypeString, Description: "When it happened."},
	"consecutive_failures":      {Type: framework.TypeInt, Description: "Failures since the last success."},
	"grants":                    {Type: framework.TypeInt, Description: "Tokens obtained so far."},
	"failures":                  {Type: framework.TypeInt, Description: "Failed attempts so far."},
	"client_secret_promoted_at": {Type: framework.TypeString, Description: "When the client's client_secret_next last became its client_secret (empty: never)."},
	"authorization":             {Type: framework.TypeString, Description: "authorization_code and device_code roles: pending, authorized, expired or denied (device)."},
	"authorized_at":             {Type: framework.TypeString, Description: "When a person last authorized the role (RFC 3339)."},
	"sub":                       {Type: framework.TypeString, Description: "The sub of the ID token the authorization gave, if any."},
	"last_poll":                 {Type: framework.TypeString, Description: "device_code roles: the last poll's result (authorization_pending, slow_down, access_denied, expired_token, or an error)."},
	"last_poll_at":              {Type: framework.TypeString, Description: "When the plugin last polled (RFC 3339)."},
}

const pathRoleStatusHelpSyn = `Read the refresh state of a role's token.`

const pathRoleStatusHelpDesc = `
Shows when the role's cached token expires (expires_at, expires_in), when it was last obtained
(last_refresh) and when the background refresher will next replace it (next_refresh), with the
number of grants and failures so far. After a failed grant, last_error names the provider's
answer (never a secret), consecutive_failures counts the failures since the last success, and
next_refresh is the retry time, which backs off exponentially up to 10 minutes and honours the
provider's Retry-After.

For authorization_code and device_code roles, authorization says whether a person has authorized
the role (authorized, with authorized_at and the ID token's sub), or where the flow under way
stands: pending, expired, or denied; device flows show the last poll's result in last_poll.

next_refresh is empty for tokens that live less than a minute, the refresher's period: those are
replaced on read. The token itself is read from "creds/<name>".
`
