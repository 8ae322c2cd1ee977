package oauth

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

func pathDevice(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "device/" + namePattern + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "oauth",
			OperationVerb:   "start",
			OperationSuffix: "device-authorization",
		},
		Fields: map[string]*framework.FieldSchema{"name": nameField},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(operation("Start the device authorization (RFC 8628) of a device_code role: the code a person enters; the plugin polls.", b.pathDeviceWrite, http.StatusOK, deviceFields)),
		},
		HelpSynopsis:    pathDeviceHelpSyn,
		HelpDescription: pathDeviceHelpDesc,
	}
}

func (b *backend) pathDeviceWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	target, err := b.loadRoleTarget(ctx, req, d, true)
	if err != nil {
		return errorResponse(err)
	}
	name, role, cfg := target.name, target.role, target.cfg
	if role.GrantType != grantDeviceCode {
		return errorResponse(fieldErrorf("grant_type", "role %q performs the %s grant; device/<name> starts device_code roles", name, role.GrantType))
	}
	endpoint := cfg.deviceAuthorizationEndpoint()
	if endpoint == "" {
		return errorResponse(fieldErrorf("device_auth_url", "the provider's device authorization endpoint is unknown: write it to config device_auth_url, or configure an issuer that advertises one"))
	}
	da, err := withSecretNext(ctx, b, req.Storage, name, cfg, role, func(client *oauthclient.Client, tr oauthclient.TokenRequest) (*oauthclient.DeviceAuthorization, error) {
		at := endpoint
		if oauthclient.IsMTLS(tr.Auth.Method) {
			at = cfg.mtlsEndpoint("device_authorization_endpoint", cfg.DeviceAuthURL, endpoint)
		}
		return client.DeviceAuth(ctx, oauthclient.DeviceAuthRequest{URL: at, Scopes: role.Scopes, Params: tr.Params, Auth: tr.Auth, Audience: tr.TokenURL})
	})
	if err != nil {
		return grantErrorResponse(err)
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	now := b.now()
	p := &pendingAuthorization{
		ID: id, Kind: kindDevice, Incarnation: role.Incarnation, ExpiresAt: now.Add(da.ExpiresIn),
		DeviceCode: da.DeviceCode, Interval: da.Interval, NextPollAt: now.Add(da.Interval),
	}
	if err := b.startPending(ctx, req.Storage, name, role, p); err != nil {
		return errorResponse(err)
	}
	b.schedulePoll(req.Storage, name, p.NextPollAt)
	data := map[string]any{
		"user_code":        da.UserCode,
		"verification_uri": da.VerificationURI,
		"expires_in":       int64(da.ExpiresIn.Seconds()),
		"interval":         int64(da.Interval.Seconds()),
	}
	if da.VerificationURIComplete != "" {
		data["verification_uri_complete"] = da.VerificationURIComplete
	}
	return &logical.Response{Data: data}, nil
}

var deviceFields = map[string]*framework.FieldSchema{
	"user_code":                 {Type: framework.TypeString, Description: "The code the person enters at verification_uri."},
	"verification_uri":          {Type: framework.TypeString, Description: "Where the person goes, on any device."},
	"verification_uri_complete": {Type: framework.TypeString, Description: "verification_uri with the user code in it, when the provider gives one."},
	"expires_in":                {Type: framework.TypeInt, Description: "Seconds the person has."},
	"interval":                  {Type: framework.TypeInt, Description: "Seconds between the plugin's polls."},
}

const pathDeviceHelpSyn = `Start the device authorization (RFC 8628) of a device_code role.`

const pathDeviceHelpDesc = `
Asks the provider's device authorization endpoint for a user code, and returns it with the
verification_uri (and verification_uri_complete) where a person signs in, on any device, and
approves. Meanwhile the plugin polls the token endpoint itself, on the node that may write,
every interval seconds (5 more after each slow_down), until the person approves, denies or the
code expires; roles/<name>/status shows the outcome and the last poll's result. A restart or a
leader change resumes the polling. After the approval the role lives on the refresh token it
gave, exactly as a refresh_token role does. A new device/<name> replaces the flow under way.
`
