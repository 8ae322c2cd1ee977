package oauth

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// keyNameField is the mount key's name in a path.
var keyNameField = &framework.FieldSchema{Type: framework.TypeString, Required: true, Description: "Name of the mount key."}

func pathKeys(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "keys/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "oauth", OperationSuffix: "keys"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: operation("List the mount keys.", b.pathKeysList, http.StatusOK, map[string]*framework.FieldSchema{
					"keys": {Type: framework.TypeStringSlice, Description: "Key names."},
				}),
			},
			HelpSynopsis:    pathKeysListHelpSyn,
			HelpDescription: pathKeysListHelpDesc,
		},
		{
			Pattern:      "keys/" + namePattern + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "oauth", OperationSuffix: "key"},
			Fields: map[string]*framework.FieldSchema{
				"name":            keyNameField,
				"alg":             {Type: framework.TypeString, Default: defaultKeyAlg, Description: "JWS algorithm the key signs with: " + strings.Join(keyAlgs, ", ") + ". Fixed when the key is created."},
				"rotation_period": {Type: framework.TypeDurationSecond, Description: "Rotate the key on this schedule (at least 1h); 0: only when keys/<name>/rotate is written."},
				"retire_after":    {Type: framework.TypeDurationSecond, Default: int(defaultRetireAfter.Seconds()), Description: "How long a replaced key stays published in the JWKS."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   operation("Read a mount key's public keys and dates (never a private part).", b.pathKeyRead, http.StatusOK, keyReadFields),
				logical.CreateOperation: forwarded(operation("Generate a mount key.", b.pathKeyWrite, http.StatusOK, keyReadFields)),
				logical.UpdateOperation: forwarded(operation("Change a mount key's rotation_period or retire_after.", b.pathKeyWrite, http.StatusOK, keyReadFields)),
				logical.DeleteOperation: forwarded(operation("Delete a mount key no role or config uses.", b.pathKeyDelete, http.StatusNoContent, nil)),
			},
			ExistenceCheck:  b.pathKeyExists,
			HelpSynopsis:    pathKeyHelpSyn,
			HelpDescription: pathKeyHelpDesc,
		},
		{
			Pattern:      "keys/" + namePattern + "/rotate$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "oauth", OperationVerb: "rotate", OperationSuffix: "key"},
			Fields:       map[string]*framework.FieldSchema{"name": keyNameField},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: forwarded(operation("Rotate a mount key: the published next key starts signing.", b.pathKeyRotate, http.StatusOK, keyReadFields)),
			},
			HelpSynopsis:    pathKeyRotateHelpSyn,
			HelpDescription: pathKeyRotateHelpDesc,
		},
		pathJWKS(b),
	}
}

// keyReadFields is what a key read (and a write or rotation) answers.
var keyReadFields = map[string]*framework.FieldSchema{
	"alg":             {Type: framework.TypeString, Description: "JWS algorithm."},
	"rotation_period": {Type: framework.TypeInt, Description: "Rotation schedule (seconds; 0: none)."},
	"retire_after":    {Type: framework.TypeInt, Description: "How long a replaced key stays published (seconds)."},
	"current":         {Type: framework.TypeMap, Description: "The key that signs: kid, public jwk, created_at."},
	"next":            {Type: framework.TypeMap, Description: "The key published to sign after the next rotation: kid, public jwk, created_at."},
	"retiring":        {Type: framework.TypeSlice, Description: "Replaced keys still published: kid, public jwk, created_at, retire_at."},
	"rotated_at":      {Type: framework.TypeString, Description: "When the current key started signing."},
	"next_rotation":   {Type: framework.TypeString, Description: "When the schedule rotates the key next (empty: no schedule)."},
}

func (b *backend) pathKeyExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateRoleName(name) != nil {
		return false, nil
	}
	k, err := b.key(ctx, req.Storage, name)
	return k != nil, err
}

func (b *backend) pathKeysList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	k, err := b.key(ctx, req.Storage, d.Get("name").(string))
	if err != nil || k == nil {
		return nil, err
	}
	return &logical.Response{Data: describeKey(k, b.now())}, nil
}

// describeKey shows the public halves and dates of a key; the private parts are not in reach.
func describeKey(k *mountKey, now time.Time) map[string]any {
	version := func(v keyVersion) map[string]any {
		out := map[string]any{"kid": v.KID, "jwk": v.Public, "created_at": rfc3339(v.CreatedAt)}
		if !v.RetireAt.IsZero() {
			out["retire_at"] = rfc3339(v.RetireAt)
		}
		return out
	}
	retiring := []map[string]any{}
	for _, v := range k.pruned(now) {
		retiring = append(retiring, version(v))
	}
	data := map[string]any{
		"alg":             k.Alg,
		"rotation_period": int64(k.RotationPeriod.Seconds()),
		"retire_after":    int64(k.RetireAfter.Seconds()),
		"current":         version(k.Current),
		"next":            version(k.Next),
		"retiring":        retiring,
		"rotated_at":      rfc3339(k.RotatedAt),
		"next_rotation":   "",
	}
	if k.RotationPeriod > 0 {
		data["next_rotation"] = rfc3339(k.RotatedAt.Add(k.RotationPeriod))
	}
	return data
}

func (b *backend) pathKeyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	old, unlock, err := b.lockKey(ctx, req.Storage, name)
	defer unlock()
	if err != nil {
		return nil, err
	}
	var k *mountKey
	if old == nil {
		alg := d.Get("alg").(string)
		period := time.Duration(d.Get("rotation_period").(int)) * time.Second
		retire := time.Duration(d.Get("retire_after").(int)) * time.Second
		if k, err = newMountKey(alg, period, retire, b.now()); err != nil {
			return errorResponse(err)
		}
	} else {
		copied := *old
		k = &copied
		if alg, ok := d.GetOk("alg"); ok && alg.(string) != k.Alg {
			return errorResponse(fieldErrorf("alg", "is %s and cannot change; create a key of another name", k.Alg))
		}
		setDuration(d, "rotation_period", &k.RotationPeriod)
		setDuration(d, "retire_after", &k.RetireAfter)
		if err := k.validate(); err != nil {
			return errorResponse(err)
		}
	}
	if err := b.putKey(ctx, req.Storage, name, k); err != nil {
		return nil, err
	}
	return &logical.Response{Data: describeKey(k, b.now())}, nil
}

func (b *backend) pathKeyRotate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	old, unlock, err := b.lockKey(ctx, req.Storage, name)
	defer unlock()
	if err != nil {
		return nil, err
	}
	if old == nil {
		return errorResponse(fieldErrorf("name", "mount key %q does not exist", clipInput(name)))
	}
	k := *old
	now := b.now()
	if err := k.rotate(now); err != nil {
		return nil, err
	}
	if err := b.putKey(ctx, req.Storage, name, &k); err != nil {
		return nil, err
	}
	b.Logger().Info("mount key rotated", "key", name, "kid", k.Current.KID)
	resp := &logical.Response{Data: describeKey(&k, now)}
	if published := now.Sub(old.Next.CreatedAt); published < jwksMaxAge {
		resp.AddWarning(fmt.Sprintf("the new current key was published %s ago: a provider that cached the JWKS before then may refuse it until its cache expires (max-age %s); rotate at most once per %s",
			published.Round(time.Second), jwksMaxAge, jwksMaxAge))
	}
	return resp, nil
}

func (b *backend) pathKeyDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	lock := b.keyLock(name)
	lock.Lock()
	defer lock.Unlock()

	users, err := b.keyUsers(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(users) > 0 {
		return errorResponse(fieldErrorf("name", "mount key %q is used by %s; point them elsewhere first", clipInput(name), strings.Join(users, ", ")))
	}
	if err := req.Storage.Delete(ctx, keyPrefix+name); err != nil {
		return nil, fmt.Errorf("deleting %s%s: %w", keyPrefix, name, err)
	}
	b.cache.keys.drop(name)
	b.keySchedule.set(name, time.Time{})
	return nil, nil
}

// keyUsers names the config and roles that sign with the key. Deletes are rare: reading every
// role here keeps the grant path free of bookkeeping.
func (b *backend) keyUsers(ctx context.Context, s logical.Storage, name string) ([]string, error) {
	var users []string
	cfg, err := b.config(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.ClientKeyName == name {
		users = append(users, "config (client_key_name)")
	}
	roles, err := s.List(ctx, rolePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	for _, r := range roles {
		role, err := b.role(ctx, s, r)
		if err != nil {
			return nil, err
		}
		if role == nil {
			continue
		}
		for field, v := range role.keyNames() {
			if v == name {
				users = append(users, fmt.Sprintf("role %s (%s)", r, field))
			}
		}
	}
	return users, nil
}

// keyNames are the mount keys the role names, by field.
func (r *roleEntry) keyNames() map[string]string {
	return map[string]string{"client_key_name": r.ClientKeyName, "assertion_key_name": r.AssertionKeyName}
}

// checkKeyNames refuses names of mount keys that do not exist.
func (b *backend) checkKeyNames(ctx context.Context, s logical.Storage, names map[string]string) error {
	for field, name := range names {
		if name == "" {
			continue
		}
		if _, err := b.existingKey(ctx, s, field, name); err != nil {
			return err
		}
	}
	return nil
}

const (
	jwksContentType = "application/jwk-set+json"
	// jwksMaxAge lets providers cache the JWKS for a few minutes: a new next key is published a
	// whole rotation before it signs, and a replaced one stays published for retire_after.
	jwksMaxAge = 5 * time.Minute
)

func pathJWKS(b *backend) *framework.Path {
	op := operation("Read the public JWK set of the mount's keys (no token needed).", b.pathJWKSRead, http.StatusOK, nil)
	op.Responses[http.StatusOK][0].MediaType = jwksContentType
	return &framework.Path{
		Pattern:         "jwks$",
		DisplayAttrs:    &framework.DisplayAttributes{OperationPrefix: "oauth", OperationVerb: "read", OperationSuffix: "jwks"},
		Operations:      map[logical.Operation]framework.OperationHandler{logical.ReadOperation: op},
		HelpSynopsis:    pathJWKSHelpSyn,
		HelpDescription: pathJWKSHelpDesc,
	}
}

func (b *backend) pathJWKSRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	now := b.now()
	var keys [][]byte
	for _, name := range names {
		k, err := b.key(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if k != nil {
			live := *k
			live.Retiring = k.pruned(now)
			for _, jwk := range live.published() {
				keys = append(keys, jwk)
			}
		}
	}
	// The JWKs are stored as compact JSON: joined as they are, not re-encoded.
	body := slices.Concat([]byte(`{"keys":[`), bytes.Join(keys, []byte(",")), []byte(`]}`))
	return &logical.Response{
		Data: map[string]any{
			logical.HTTPStatusCode:  http.StatusOK,
			logical.HTTPContentType: jwksContentType,
			logical.HTTPRawBody:     body,
			// Vault answers Cache-Control: no-store otherwise.
			logical.HTTPCacheControlHeader: fmt.Sprintf("public, max-age=%d", int(jwksMaxAge.Seconds())),
		},
	}, nil
}

const pathKeysListHelpSyn = `List the mount keys.`

const pathKeysListHelpDesc = `Lists the names of the signing keys generated and held by this mount.`

const pathKeyHelpSyn = `Manage a signing key generated and held by the mount.`

const pathKeyHelpDesc = `
Writing a new name generates a key pair in Vault ("alg": ES256 by default, RS256, PS256 or
EdDSA) together with the next key pair, published ahead of use. The private keys never leave
Vault: a read shows the public JWKs (current, next, and replaced keys still published) and their
dates. A role or the config signs with the key through client_key_name (private_key_jwt) or
assertion_key_name (jwt_bearer); the JWT header carries the current key's kid, its RFC 7638
thumbprint. The provider learns the public keys from "jwks".

"rotation_period" rotates the key on a schedule; "retire_after" (default 24h) is how long a
replaced key stays published. A write to an existing key changes only these two. A key that a
role or the config uses cannot be deleted.
`

const pathKeyRotateHelpSyn = `Rotate a mount key now.`

const pathKeyRotateHelpDesc = `
The next key, already published in "jwks", becomes the current key and signs from now on; a new
next key is published; the replaced key stays published for retire_after, so a provider that
cached the JWKS never sees an unknown kid. Tokens already cached keep being served.
`

const pathJWKSHelpSyn = `The public JWK set of the mount's keys.`

const pathJWKSHelpDesc = `
Answers, without a Vault token, the public keys of every mount key (current, next and those
still published after a rotation) as an RFC 7517 JWK set with Content-Type
application/jwk-set+json and Cache-Control max-age=300. Register
https://<vault>/v1/<mount>/jwks as the client's jwks_uri at the provider.
`
