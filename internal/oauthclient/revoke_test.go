package oauthclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

const (
	revokeClientID = "revoking-client"
	revokeSecret   = "revoking-client-secret-0123456789abcdef0123"
)

func newRevokeClient(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient("", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRevokeRevokesAtProvider revokes a real access token with each client authentication the
// provider checks, and the provider then reports the token inactive.
func TestRevokeRevokesAtProvider(t *testing.T) {
	for _, method := range []string{AuthClientSecretBasic, AuthClientSecretPost, AuthClientSecretJWT} {
		t.Run(method, func(t *testing.T) {
			p := testprovider.New(t)
			p.AddClient(&testprovider.Client{ID: revokeClientID, Secret: revokeSecret, AuthMethod: method})
			c := newRevokeClient(t)
			auth := ClientAuth{Method: method, ClientID: revokeClientID, ClientSecret: revokeSecret}
			tok, err := c.Exchange(context.Background(), TokenRequest{TokenURL: p.TokenURL(), GrantType: GrantClientCredentials, Auth: auth})
			if err != nil {
				t.Fatal(err)
			}
			if _, active := p.Introspect(tok.AccessToken); !active {
				t.Fatal("the new token should be active")
			}
			err = c.Revoke(context.Background(), RevocationRequest{
				URL: p.URL + "/revoke", Token: tok.AccessToken, TokenTypeHint: "access_token", Auth: auth, Audience: p.TokenURL(),
			})
			if err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if _, active := p.Introspect(tok.AccessToken); active {
				t.Fatal("the token is still active after revocation")
			}
		})
	}
}

// TestRevokeRequestForm checks the RFC 7009 §2.1 request: form-encoded token and hint, and the
// client secret only where the method puts it.
func TestRevokeRequestForm(t *testing.T) {
	type seen struct {
		form        url.Values
		user, pass  string
		basic       bool
		contentType string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		user, pass, ok := r.BasicAuth()
		got <- seen{form: r.PostForm, user: user, pass: pass, basic: ok, contentType: r.Header.Get("Content-Type")}
	}))
	defer srv.Close()
	c := newRevokeClient(t)

	id := "client:with/odd chars"
	err := c.Revoke(context.Background(), RevocationRequest{
		URL: srv.URL, Token: "the-access-token", TokenTypeHint: "access_token",
		Auth: ClientAuth{Method: AuthClientSecretBasic, ClientID: id, ClientSecret: revokeSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.form.Get("token") != "the-access-token" || s.form.Get("token_type_hint") != "access_token" {
		t.Fatalf("form = %v", s.form)
	}
	if !s.basic || s.user != url.QueryEscape(id) || s.pass != url.QueryEscape(revokeSecret) {
		t.Fatalf("basic credentials = %q %q (present %v), want both form-urlencoded", s.user, s.pass, s.basic)
	}
	if s.form.Has("client_secret") || !strings.HasPrefix(s.contentType, "application/x-www-form-urlencoded") {
		t.Fatalf("basic auth must not put the secret in the body: form %v, content type %q", s.form, s.contentType)
	}

	err = c.Revoke(context.Background(), RevocationRequest{
		URL: srv.URL, Token: "t", Auth: ClientAuth{Method: AuthNone, ClientID: "public"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s = <-got
	if s.basic || s.form.Get("client_id") != "public" || s.form.Has("client_secret") || s.form.Has("token_type_hint") {
		t.Fatalf("public client: form %v, basic %v", s.form, s.basic)
	}
}

func TestRevokeErrors(t *testing.T) {
	var status int
	var header, body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if header != "" {
			w.Header().Set("Retry-After", header)
		}
		if status == http.StatusFound {
			w.Header().Set("Location", "https://elsewhere.example/revoke")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	c := newRevokeClient(t)
	revoke := func() *Error {
		t.Helper()
		err := c.Revoke(context.Background(), RevocationRequest{
			URL: srv.URL, Token: "secret-access-token", TokenTypeHint: "access_token",
			Auth: ClientAuth{Method: AuthClientSecretPost, ClientID: revokeClientID, ClientSecret: revokeSecret},
		})
		var oe *Error
		if !errors.As(err, &oe) {
			t.Fatalf("want *Error, got %v", err)
		}
		for _, secret := range []string{"secret-access-token", revokeSecret} {
			if strings.Contains(oe.Error(), secret) {
				t.Fatalf("error leaks a secret: %q", oe.Error())
			}
		}
		if !strings.HasPrefix(oe.Error(), "revocation request failed") {
			t.Fatalf("error should name the revocation request: %q", oe.Error())
		}
		return oe
	}

	status, body = http.StatusBadRequest, `{"error":"unsupported_token_type","error_description":"cannot revoke access tokens"}`
	if oe := revoke(); oe.StatusCode != 400 || oe.Code != "unsupported_token_type" || oe.Description != "cannot revoke access tokens" || oe.Temporary() {
		t.Fatalf("400: %+v", oe)
	}

	status, header, body = http.StatusServiceUnavailable, "30", ""
	if oe := revoke(); oe.StatusCode != 503 || oe.RetryAfter != 30*time.Second || !oe.Temporary() {
		t.Fatalf("503: %+v", oe)
	}

	status, header = http.StatusFound, ""
	if oe := revoke(); oe.StatusCode != http.StatusFound {
		t.Fatalf("a redirect must not be followed: %+v", oe)
	}

	srv.Close()
	if oe := revoke(); oe.StatusCode != 0 || !strings.Contains(oe.Cause, "cannot reach") {
		t.Fatalf("closed server: %+v", oe)
	}
}
