package oauthclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
)

// RevocationRequest asks the authorization server to revoke a token (RFC 7009 §2.1).
type RevocationRequest struct {
	URL   string
	Token string
	// TokenTypeHint is "access_token" or "refresh_token"; empty sends no hint.
	TokenTypeHint string
	Auth          ClientAuth
	// Audience is the aud of a JWT client assertion. RFC 7523 §3 lets the token endpoint stand
	// for the authorization server, which is what servers check, whichever endpoint is called.
	Audience string
}

// revocationRequestName prefixes revocation errors, which are otherwise token-request errors.
const revocationRequestName = "revocation request"

// Revoke revokes a token, authenticating the client as for a token request. The server answers
// 200 whether or not the token was still valid (RFC 7009 §2.2); any other answer is an *Error.
func (c *Client) Revoke(ctx context.Context, req RevocationRequest) error {
	form := url.Values{"token": {req.Token}}
	if req.TokenTypeHint != "" {
		form.Set("token_type_hint", req.TokenTypeHint)
	}
	resp, err := c.postForm(ctx, revocationRequestName, req.URL, form, req.Auth, req.Audience)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return revocationError(resp, body)
}

// revocationError describes a refused revocation: RFC 7009 §2.2.1 errors use RFC 6749 §5.2's form.
func revocationError(resp *http.Response, body []byte) *Error {
	var e struct {
		Code        string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &e)
	out := &Error{Request: revocationRequestName, Code: clip(e.Code, 64), Description: clip(e.Description, maxDescription)}
	out.setStatus(resp)
	return out
}
