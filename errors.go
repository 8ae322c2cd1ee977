package oauth

import (
	"errors"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// fieldError is bad input: it becomes a 400 that names the field.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func fieldErrorf(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// errNoConfig is returned when a role is used before the mount has a provider.
var errNoConfig = errors.New("the provider is not configured: write oauth/config first")

var errRoleChanged = errors.New("the role or the config was changed or deleted while its token was being obtained; read again")

// errStrandedRefreshToken: the role's refresh token belongs to the client or provider the config
// named before. It is kept, never sent elsewhere.
var errStrandedRefreshToken = errors.New("the role's refresh token was issued to another client ID or provider than the config now names, and is not sent there: " +
	"restore the config's client_id / issuer / token_url, or import a refresh token for the new one with vault write <mount>/roles/<name> refresh_token=@file")

var errClosing = errors.New("the plugin is shutting down or reloading; read again")

func unknownRoleError(name string) error {
	return &fieldError{field: "name", msg: fmt.Sprintf("role %q does not exist", clipInput(name))}
}

// errorResponse turns bad input and errors the operator must act on into a 400, and anything
// else into an internal error.
func errorResponse(err error) (*logical.Response, error) {
	var fe *fieldError
	if errors.As(err, &fe) || errors.Is(err, errNoConfig) || errors.Is(err, errRoleChanged) || errors.Is(err, errStrandedRefreshToken) {
		return logical.ErrorResponse(err.Error()), nil
	}
	return nil, err
}

// grantErrorResponse reports a failed grant: bad configuration and provider rejections are the
// operator's to fix (400); an unreachable or failing provider is a 502-like internal error.
func grantErrorResponse(err error) (*logical.Response, error) {
	if oe := (*oauthclient.Error)(nil); errors.As(err, &oe) && !oe.Temporary() {
		return logical.ErrorResponse(err.Error()), nil
	}
	return errorResponse(err)
}
