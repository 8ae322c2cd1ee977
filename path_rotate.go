package oauth

import (
	"context"
	"fmt"
	"maps"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

func pathRotate(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "rotate/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "rotate",
			OperationSuffix: "role-token",
		},
		Fields: map[string]*framework.FieldSchema{
			"name":            nameField,
			"revoke_previous": {Type: framework.TypeBool, Description: "Revoke the replaced access token at the provider (RFC 7009). Default: true for roles without a refresh token; false for roles that hold one, because a provider may revoke the whole grant, refresh token included, with its access token."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(operation("Replace the role's cached token with a new one now.", b.pathRotateWrite, http.StatusOK, rotateFields)),
		},
		HelpSynopsis:    pathRotateHelpSyn,
		HelpDescription: pathRotateHelpDesc,
	}
}

func (b *backend) pathRotateWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, false)
	if err != nil {
		return errorResponse(err)
	}
	name, role, cfg := target.name, target.role, target.cfg
	if role.GrantType == grantOAuth1 {
		resp, err := errorResponse(oauth1NoToken(name))
		return withMount(resp, req.MountPoint), err
	}
	if role.readerSupplied() {
		return errorResponse(fieldErrorf("name", "role %q has no token of its own: its subject tokens come from exchange/%s", name, name))
	}
	if cfg == nil {
		return errorResponse(errNoConfig)
	}
	old, err := b.currentToken(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}

	out := b.obtainToken(ctx, req.Storage, name, forceGrant, byRotate)
	if out.err == nil && old != nil && out.token.AccessToken == old.AccessToken {
		// We joined a grant already under way that decided the old token was good enough.
		out = b.obtainToken(ctx, req.Storage, name, forceGrant, byRotate)
	}
	if out.err != nil {
		if out.token != nil {
			out.err = fmt.Errorf("%w; the previous token, valid until %s, is still served", out.err, rfc3339(out.token.ExpiresAt))
		}
		resp, err := grantErrorResponse(out.err)
		return withMount(resp, req.MountPoint), err
	}

	resp := &logical.Response{Data: b.roleStatus(ctx, req.Storage, name, role, out.token, cfg)}
	revoke, asked := d.GetOk("revoke_previous")
	revoked := false
	switch {
	case asked && revoke.(bool), !asked && out.token.RefreshToken == "":
		if revoked, err = b.revokeOld(ctx, req.Storage, name, cfg, role, old); err != nil {
			resp.AddWarning(fmt.Sprintf("the new token is stored, but revoking the previous one at the provider failed: %v", err))
		}
	case !asked && old.remaining(b.now()) > 0 && cfg.revocationEndpoint() != "":
		resp.AddWarning("the previous access token was not revoked: the role lives on a refresh token, and a provider may revoke it with the access token (RFC 7009 §2.1); " +
			"write revoke_previous=true to revoke it anyway")
	}
	resp.Data["previous_token_revoked"] = revoked
	return resp, nil
}

// revokeOld revokes the replaced access token (RFC 7009) when the provider has a revocation
// endpoint and the token has not expired anyway. It reports whether it did.
func (b *backend) revokeOld(ctx context.Context, s logical.Storage, name string, cfg *configEntry, role *roleEntry, old *tokenEntry) (bool, error) {
	endpoint := cfg.revocationEndpoint()
	if endpoint == "" || old.remaining(b.now()) == 0 {
		return false, nil
	}
	// role is as the rotate read it: a promotion by its grant since is found again here.
	_, err := withSecretNext(ctx, b, s, name, cfg, role, func(client *oauthclient.Client, req oauthclient.TokenRequest) (struct{}, error) {
		at := endpoint
		if req.Auth.Certificate != nil {
			at = cfg.mtlsEndpoint("revocation_endpoint", cfg.RevocationURL, endpoint)
		}
		return struct{}{}, client.Revoke(ctx, oauthclient.RevocationRequest{
			URL:           at,
			Token:         old.AccessToken,
			TokenTypeHint: "access_token",
			Auth:          req.Auth,
			Audience:      req.TokenURL,
		})
	})
	return err == nil, err
}

// rotateFields is what a rotate answers: the role's new status.
var rotateFields = func() map[string]*framework.FieldSchema {
	fields := maps.Clone(statusFields)
	fields["previous_token_revoked"] = &framework.FieldSchema{Type: framework.TypeBool, Description: "Whether the replaced access token was revoked at the provider."}
	return fields
}()

const pathRotateHelpSyn = `Replace the role's cached token with a new one now.`

const pathRotateHelpDesc = `
Performs the role's grant at once and replaces the cached token, whatever time it had left: use
it when a token is known to be compromised or was revoked at the provider. Readers of
"creds/<name>" get the new token from then on; applications holding the old one must read again.

When the provider has a revocation endpoint (revocation_url, or discovered from the issuer), the
old access token is revoked there (RFC 7009) after the new one is stored; a failed revocation is
reported as a warning. Roles that hold a refresh token (refresh_token, and password when the
provider issues one) do not revoke by default: RFC 7009 lets a provider revoke the whole grant,
the new refresh token included, along with an access token. revoke_previous=true revokes anyway;
revoke_previous=false never revokes. If the grant fails, the old token is kept and still served
until it expires, and the error is reported.
`
