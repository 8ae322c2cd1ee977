package oauth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// The client assertion of one grant: the key made ready and the JWT signed, with a pasted PEM key
// and with a mount key of the same algorithm.
func BenchmarkClientAssertion(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256"} {
		for _, source := range []string{"pasted", "mount"} {
			b.Run(alg+"/"+source, func(b *testing.B) {
				p := testprovider.New(b)
				be, s := newTestBackend(b)
				mustSucceed(b, request(b, be, s, logical.UpdateOperation, "keys/k", map[string]any{"alg": alg}))
				role := map[string]any{"client_id": "c", "auth_method": "private_key_jwt", "client_key_name": "k"}
				if source == "pasted" {
					pemText := testPEMKey(b)
					if alg == "RS256" {
						pemText, _ = rsaKeyPEM(b)
					}
					role = map[string]any{"client_id": "c", "auth_method": "private_key_jwt", "client_key": pemText}
				}
				mustSucceed(b, request(b, be, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
				mustSucceed(b, request(b, be, s, logical.UpdateOperation, "roles/app", role))
				ctx := context.Background()
				r, _ := be.role(ctx, s, "app")
				cfg, _ := be.config(ctx, s)
				for b.Loop() {
					req, err := be.baseRequest(ctx, s, cfg, r)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := req.Auth.Key.SignJWT(oauthclient.Claims{Issuer: "c", Subject: "c", Audience: p.TokenURL(), TTL: time.Minute}, time.Now()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// An unauthenticated JWKS read, by the number of keys in the mount.
func BenchmarkJWKSRead(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			be, s := newTestBackend(b)
			for i := range n {
				mustSucceed(b, request(b, be, s, logical.UpdateOperation, fmt.Sprintf("keys/k%d", i), nil))
			}
			for b.Loop() {
				if _, err := requestErr(be, s, logical.ReadOperation, "jwks", nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
