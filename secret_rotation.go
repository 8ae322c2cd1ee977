package oauth

import (
	"context"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// promoteSecret makes next the client secret of the entry that holds the role's secrets (the
// role, else the config), provided it still holds current and next: an edit made since the grant
// read them wins. It returns when it promoted (zero: it did not). Nothing here calls the
// provider.
func (b *backend) promoteSecret(ctx context.Context, s logical.Storage, name, current, next string) (time.Time, error) {
	promoted, ownSecret, err := b.promoteRoleSecret(ctx, s, name, current, next)
	if err != nil || ownSecret {
		return promoted, err
	}
	return b.promoteConfigSecret(ctx, s, current, next)
}

// promoteRoleSecret promotes the role's own secret; ownSecret is false when the role takes the
// config's.
func (b *backend) promoteRoleSecret(ctx context.Context, s logical.Storage, name, current, next string) (promoted time.Time, ownSecret bool, err error) {
	role, unlock, err := b.lockRole(ctx, s, name)
	defer unlock()
	if err != nil || role == nil {
		return time.Time{}, true, err
	}
	if !role.hasCredential() {
		return time.Time{}, false, nil
	}
	if role.ClientSecret != current || role.ClientSecretNext != next || next == "" {
		return time.Time{}, true, nil
	}
	updated := *role
	updated.promote(b.now())
	if err := putJSON(ctx, s, rolePrefix+name, &updated); err != nil {
		return time.Time{}, true, err
	}
	b.cache.roles.set(name, &updated)
	b.Logger().Info("client_secret_next promoted to client_secret", "role", name)
	return updated.ClientSecretPromotedAt, true, nil
}

func (b *backend) promoteConfigSecret(ctx context.Context, s logical.Storage, current, next string) (time.Time, error) {
	b.configLock.Lock()
	defer b.configLock.Unlock()
	cfg, err := readEntry[configEntry](ctx, s, configPath)
	if err != nil || cfg == nil {
		return time.Time{}, err
	}
	if cfg.ClientSecret != current || cfg.ClientSecretNext != next || next == "" {
		return time.Time{}, nil
	}
	updated := *cfg
	updated.promote(b.now())
	if err := putJSON(ctx, s, configPath, &updated); err != nil {
		return time.Time{}, err
	}
	b.cache.config.set("", &updated)
	b.Logger().Info("client_secret_next promoted to client_secret", "entry", "config")
	return updated.ClientSecretPromotedAt, nil
}

func (c *clientCredentials) promote(now time.Time) {
	c.ClientSecret, c.ClientSecretNext, c.ClientSecretPromotedAt = c.ClientSecretNext, "", now
}

// keepPromotion carries into cfg, a config write prepared from old without the lock, a
// promotion stored since, unless the write sets the secrets itself. Called under configLock.
func keepPromotion(cfg, old, stored *configEntry, d *framework.FieldData) {
	if old == nil || stored == nil || stored.ClientSecretPromotedAt.Equal(old.ClientSecretPromotedAt) {
		return
	}
	_, secret := d.GetOk("client_secret")
	_, next := d.GetOk("client_secret_next")
	if !secret && !next {
		cfg.ClientSecret, cfg.ClientSecretNext, cfg.ClientSecretPromotedAt = stored.ClientSecret, stored.ClientSecretNext, stored.ClientSecretPromotedAt
	}
}

func pathPromoteSecret(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "config/promote-secret$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "oauth", OperationVerb: "promote", OperationSuffix: "config-secret"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(operation("Make the config's client_secret_next its client_secret.", b.pathConfigPromoteSecret, http.StatusOK, promoteFields)),
			},
			HelpSynopsis:    pathPromoteSecretHelpSyn,
			HelpDescription: pathPromoteSecretHelpDesc,
		},
		{
			Pattern:      "roles/" + namePattern + "/promote-secret$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "oauth", OperationVerb: "promote", OperationSuffix: "role-secret"},
			Fields:       map[string]*framework.FieldSchema{"name": nameField},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(operation("Make the role's client_secret_next its client_secret.", b.pathRolePromoteSecret, http.StatusOK, promoteFields)),
			},
			HelpSynopsis:    pathPromoteSecretHelpSyn,
			HelpDescription: pathPromoteSecretHelpDesc,
		},
	}
}

var promoteFields = map[string]*framework.FieldSchema{
	"client_secret_promoted_at": {Type: framework.TypeString, Description: "When client_secret_next became client_secret."},
}

func (b *backend) pathConfigPromoteSecret(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return errorResponse(errNoConfig)
	}
	return b.promoted(b.promoteConfigSecret(ctx, req.Storage, cfg.ClientSecret, cfg.ClientSecretNext))
}

func (b *backend) pathRolePromoteSecret(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return errorResponse(unknownRoleError(name))
	}
	if !role.hasCredential() {
		return errorResponse(fieldErrorf("name", "role %q uses the config's client secret: promote it at config/promote-secret", clipInput(name)))
	}
	promoted, _, err := b.promoteRoleSecret(ctx, req.Storage, name, role.ClientSecret, role.ClientSecretNext)
	return b.promoted(promoted, err)
}

func (b *backend) promoted(at time.Time, err error) (*logical.Response, error) {
	if err != nil {
		return nil, err
	}
	if at.IsZero() {
		return errorResponse(fieldErrorf("client_secret_next", "is not set (or was just changed): nothing to promote"))
	}
	return &logical.Response{Data: map[string]any{"client_secret_promoted_at": rfc3339(at)}}, nil
}

const pathPromoteSecretHelpSyn = `Make client_secret_next the client secret.`

const pathPromoteSecretHelpDesc = `
Ends a client secret rotation: client_secret_next becomes client_secret and client_secret_next is
cleared. The plugin does this by itself the first time the provider refuses client_secret with
invalid_client and takes client_secret_next; write here once the provider has the new secret, to
finish the rotation before the old secret is revoked. Cached tokens stay valid.
`
