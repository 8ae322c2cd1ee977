package oauth

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// newClientPKI is a CA and a client certificate it issued for subject CN=<cn>.
func newClientPKI(t *testing.T, cn string) *testprovider.ClientPKI {
	t.Helper()
	pki, err := testprovider.NewClientPKI(cn)
	must(t, err)
	return pki
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tlsConfigured is a backend whose config discovers p (served over TLS) and trusts it.
func tlsConfigured(t *testing.T, p *testprovider.Provider) (*backend, *faultyStorage) {
	t.Helper()
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"issuer": p.URL, "ca_pem": p.CertificatePEM()}))
	return b, s
}

// tls_client_auth with a CA-issued certificate and its pasted key (RFC 8705 §2.1).
func TestMTLSClientAuthWithPastedKey(t *testing.T) {
	pki := newClientPKI(t, "payments")
	p := testprovider.NewTLS(t, pki.Pool)
	p.AddClient(&testprovider.Client{ID: "payments", AuthMethod: "tls_client_auth", TLSSubjectDN: "CN=payments"})
	b, s := tlsConfigured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"client_id": "payments", "auth_method": "tls_client_auth", "client_cert": pki.CertPEM, "client_key": pki.KeyPEM,
	}))
	tok := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if issued, ok := p.Introspect(tok); !ok || issued.ClientID != "payments" {
		t.Fatalf("token: %+v active=%v", issued, ok)
	}
	read := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app", nil)).Data
	if read["client_cert"] != pki.CertPEM || read["client_key_set"] != true {
		t.Fatalf("role read: %v", read)
	}

	// Another CA's certificate of the same subject is refused by the provider.
	other := newClientPKI(t, "payments")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/other", map[string]any{
		"client_id": "payments", "auth_method": "tls_client_auth", "client_cert": other.CertPEM, "client_key": other.KeyPEM,
	}))
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/other", nil), "invalid_client")
}

func TestMTLSInputIsChecked(t *testing.T) {
	pki := newClientPKI(t, "payments")
	other := newClientPKI(t, "payments")
	p := testprovider.NewTLS(t, nil)
	b, s := tlsConfigured(t, p)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"auth_method": "tls_client_auth", "client_cert": pki.CertPEM, "client_key": other.KeyPEM}), "client_key")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"auth_method": "tls_client_auth", "client_cert": "not a certificate", "client_key": pki.KeyPEM}), "client_cert")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"auth_method": "tls_client_auth", "client_key": pki.KeyPEM}), "client_cert")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"auth_method": "self_signed_tls_client_auth"}), "client_key_name")
	if r := request(t, b, s, logical.ReadOperation, "roles/app", nil); r != nil {
		t.Fatalf("refused writes created the role: %v", r.Data)
	}
}

// self_signed_tls_client_auth with a mount key: the provider matches the key's self-signed
// certificate against the x5c of the JWKS it fetches, at the discovered mTLS token endpoint. The
// provider lists the CAs it accepts (as one that also does tls_client_auth does); the
// self-signed certificate is presented all the same.
func TestMTLSSelfSignedWithMountKey(t *testing.T) {
	p := testprovider.NewTLS(t, newClientPKI(t, "unrelated").Pool)
	p.SetMetadata(map[string]any{"mtls_endpoint_aliases": map[string]any{"token_endpoint": p.URL + "/mtls/token"}})
	b, s := tlsConfigured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/tls", map[string]any{"alg": "EdDSA"}))
	p.AddClient(&testprovider.Client{ID: "self", AuthMethod: "self_signed_tls_client_auth", JWKSURI: jwksServer(t, b, s).URL})
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"client_id": "self", "auth_method": "self_signed_tls_client_auth", "client_key_name": "tls",
	}))
	readCreds(t, b, s, "app", nil)
	if p.TokenRequestsAt("/mtls/token") != 1 || p.TokenRequestsAt("/token") != 0 {
		t.Fatalf("token requests: %d at the mTLS alias, %d at token_endpoint", p.TokenRequestsAt("/mtls/token"), p.TokenRequestsAt("/token"))
	}
	// After a rotation the next key's certificate, published ahead, is the one presented.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/tls/rotate", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
	if p.TokenRequestsAt("/mtls/token") != 2 || p.JWKSFetches() != 1 {
		t.Fatalf("after a rotation: %d mTLS token requests, %d jwks fetches", p.TokenRequestsAt("/mtls/token"), p.JWKSFetches())
	}
}
