package oauthclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
	"golang.org/x/oauth2"
)

func TestAuthorizationRequestURL(t *testing.T) {
	verifier := GenerateVerifier()
	raw := AuthorizationRequest{
		AuthURL: "https://idp.example/authorize?tenant=t1", ClientID: "app", RedirectURI: "https://vault.example/v1/oauth/callback",
		Scopes: []string{"openid", "email"}, State: "st", Verifier: verifier, Nonce: "n1",
		Params: map[string]string{"access_type": "offline", "prompt": "consent"},
	}.URL()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := url.Values{
		"tenant": {"t1"}, "response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {"https://vault.example/v1/oauth/callback"},
		"scope": {"openid email"}, "state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"}, "nonce": {"n1"}, "access_type": {"offline"}, "prompt": {"consent"},
	}
	if got := u.Query(); got.Encode() != want.Encode() {
		t.Fatalf("query\n got %s\nwant %s", got.Encode(), want.Encode())
	}
}

// DeviceAuth authenticates the client as a token request would, at the real test provider.
func TestDeviceAuth(t *testing.T) {
	for _, method := range []string{AuthClientSecretBasic, AuthClientSecretPost, AuthClientSecretJWT} {
		t.Run(method, func(t *testing.T) {
			p := testprovider.New(t)
			p.AddClient(&testprovider.Client{ID: revokeClientID, Secret: revokeSecret, AuthMethod: method})
			da, err := newRevokeClient(t).DeviceAuth(context.Background(), DeviceAuthRequest{
				URL: p.URL + "/device_authorization", Scopes: []string{"openid"}, Audience: p.TokenURL(),
				Auth: ClientAuth{Method: method, ClientID: revokeClientID, ClientSecret: revokeSecret},
			})
			if err != nil {
				t.Fatal(err)
			}
			if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI != p.URL+"/device" || da.ExpiresIn != 10*time.Minute || da.Interval != 5*time.Second {
				t.Fatalf("device authorization: %+v", da)
			}
		})
	}
}

func TestDeviceAuthAnswers(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		check  func(t *testing.T, da *DeviceAuthorization, err error)
	}{
		{"Google's verification_url, default interval", 200, `{"device_code":"d","user_code":"u","verification_url":"https://g.co/device","expires_in":"1800"}`,
			func(t *testing.T, da *DeviceAuthorization, err error) {
				if err != nil || da.VerificationURI != "https://g.co/device" || da.Interval != 5*time.Second || da.ExpiresIn != 30*time.Minute {
					t.Fatalf("%+v, %v", da, err)
				}
			}},
		{"provider error", 400, `{"error":"invalid_scope","error_description":"no such scope"}`,
			func(t *testing.T, _ *DeviceAuthorization, err error) {
				var oe *Error
				if !errors.As(err, &oe) || oe.Code != "invalid_scope" || oe.StatusCode != 400 || oe.Request != "device authorization request" || oe.Temporary() {
					t.Fatalf("%#v", err)
				}
			}},
		{"fields missing", 200, `{"device_code":"d"}`,
			func(t *testing.T, _ *DeviceAuthorization, err error) {
				var oe *Error
				if !errors.As(err, &oe) || oe.Kind() != KindInvalidResponse {
					t.Fatalf("%#v", err)
				}
			}},
		{"not JSON", 200, `<html>`,
			func(t *testing.T, _ *DeviceAuthorization, err error) {
				var oe *Error
				if !errors.As(err, &oe) || oe.Kind() != KindInvalidResponse {
					t.Fatalf("%#v", err)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			da, err := newRevokeClient(t).DeviceAuth(context.Background(), DeviceAuthRequest{URL: srv.URL, Auth: ClientAuth{Method: AuthNone, ClientID: "c"}})
			tc.check(t, da, err)
		})
	}
}

func TestParseIDToken(t *testing.T) {
	key, err := ParseSigningKey("0123456789abcdef0123456789abcdef", "HS256", "")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := key.SignJWT(Claims{Issuer: "https://idp.example", Subject: "alice", Audience: "app", TTL: time.Minute, Extra: map[string]any{"nonce": "n1"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	claims, err := ParseIDToken(raw)
	if err != nil || claims.Issuer != "https://idp.example" || claims.Subject != "alice" || len(claims.Audience) != 1 || claims.Audience[0] != "app" || claims.Nonce != "n1" {
		t.Fatalf("%+v, %v", claims, err)
	}
	if _, err := ParseIDToken("id.not-a-jwt"); err == nil {
		t.Fatal("an opaque ID token parsed")
	}
}
