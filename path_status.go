package oauth

import (
	"context"

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
			"name": {Type: framework.TypeString, Required: true, Description: "Name of the role."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{Callback: b.pathRoleStatusRead},
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
	return &logical.Response{Data: b.refreshStatus(target.name, target.role, tok, target.cfg)}, nil
}

// refreshStatus describes the role's token and refresh state, never the token itself.
func (b *backend) refreshStatus(name string, role *roleEntry, tok *tokenEntry, cfg *configEntry) map[string]any {
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
	}
	if tok.AccessToken != "" {
		data["expires_at"] = rfc3339(tok.ExpiresAt)
	}
	if plan := b.plan(name, role, tok, cfg); !plan.onRead {
		// The refresher acts at the first tick at or after this moment.
		data["next_refresh"] = rfc3339(laterOf(plan.at, now))
	}
	return data
}

const pathRoleStatusHelpSyn = `Read the refresh state of a role's token.`

const pathRoleStatusHelpDesc = `
Shows when the role's cached token expires (expires_at, expires_in), when it was last obtained
(last_refresh) and when the background refresher will next replace it (next_refresh), with the
number of grants and failures so far. After a failed grant, last_error names the provider's
answer (never a secret), consecutive_failures counts the failures since the last success, and
next_refresh is the retry time, which backs off exponentially up to 10 minutes and honours the
provider's Retry-After.

next_refresh is empty for tokens that live less than a minute, the refresher's period: those are
replaced on read. The token itself is read from "creds/<name>".
`
