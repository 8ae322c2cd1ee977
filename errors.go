package oauth

import (
	"errors"
	"fmt"
	"strings"

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

// notAuthorizedError: the role's grant needs a person, who has not authorized it yet (or whose
// authorization no longer holds a usable refresh token).
type notAuthorizedError struct {
	name string
	// startPath is the path that starts the person's part: "authorize" or "device".
	startPath string
}

func (e *notAuthorizedError) Error() string {
	return fmt.Sprintf("role %q is not authorized yet: run vault write -force <mount>/%s/%s and complete it", e.name, e.startPath, e.name)
}

// withMount names the mount in an answer's error, where messages say <mount>.
func withMount(resp *logical.Response, mount string) *logical.Response {
	if resp != nil && resp.IsError() && mount != "" {
		resp.Data["error"] = strings.ReplaceAll(resp.Error().Error(), "<mount>/", mount)
	}
	return resp
}

// errorResponse turns bad input and errors the operator must act on into a 400, and anything
// else into an internal error.
func errorResponse(err error) (*logical.Response, error) {
	var fe *fieldError
	var nae *notAuthorizedError
	if errors.As(err, &fe) || errors.As(err, &nae) || errors.Is(err, errNoConfig) || errors.Is(err, errRoleChanged) || errors.Is(err, errStrandedRefreshToken) || errors.Is(err, errStaleAuthorization) {
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
