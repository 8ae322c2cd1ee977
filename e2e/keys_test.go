//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// vaultJWKS reads the mount's JWKS as the provider does: plain HTTP, no Vault token.
func vaultJWKS(t *testing.T, mount string) (kids []string, header http.Header) {
	t.Helper()
	resp, err := httpClient.Get(env.vaultAddr + "/v1/" + mount + "/jwks")
	must(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	recordText("answer to jwks of "+mount, string(raw))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks: %s: %s", resp.Status, raw)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	must(t, json.Unmarshal(raw, &set))
	for _, k := range set.Keys {
		if _, private := k["d"]; private {
			t.Fatal("the JWKS publishes a private key")
		}
		kids = append(kids, str(k["kid"]))
	}
	return kids, resp.Header
}

// jwksFetches is how many times the provider fetched url.
func jwksFetches(t *testing.T, u string) int64 {
	t.Helper()
	resp, err := httpClient.Get(env.ProviderURL + "/test/jwks-fetches")
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks fetches: %s", resp.Status)
	}
	var out struct {
		Fetches map[string]int64 `json:"fetches"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Fetches[u]
}

func keyKID(s map[string]any, version string) string {
	v, _ := s[version].(map[string]any)
	return str(v["kid"])
}

// A client registered with jwks_uri at the mount's jwks authenticates with private_key_jwt
// signed by a key born in Vault, and keeps doing so across rotations.
func TestKeysPrivateKeyJWTThroughVaultJWKS(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256", "PS256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			mount := configuredMount(t)
			key := mustWrite(t, env.client, mount+"/keys/client", map[string]any{"alg": alg}).Data
			jwksURI := env.vaultAddr + "/v1/" + mount + "/jwks"
			kids, header := vaultJWKS(t, mount)
			if !slices.Equal(kids, []string{keyKID(key, "current"), keyKID(key, "next")}) {
				t.Fatalf("jwks has %v, want current and next of %v", kids, key)
			}
			if ct, cc := header.Get("Content-Type"), header.Get("Cache-Control"); ct != "application/jwk-set+json" || !strings.Contains(cc, "max-age=") {
				t.Fatalf("jwks headers: Content-Type %q, Cache-Control %q", ct, cc)
			}

			id, _ := registerClient(t, map[string]any{"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwksURI})
			mustWrite(t, env.client, mount+"/roles/app", map[string]any{
				"client_id": id, "auth_method": "private_key_jwt", "client_key_name": "client", "scopes": "read",
			})
			first, _ := readActiveToken(t, env.client, mount+"/creds/app", id)
			if n := jwksFetches(t, jwksURI); n != 1 {
				t.Fatalf("the provider fetched the JWKS %d times, want 1", n)
			}

			// The next key was published before it signs: the provider's cached JWKS knows it.
			rotated := mustWrite(t, env.client, mount+"/keys/client/rotate", nil).Data
			if keyKID(rotated, "current") != keyKID(key, "next") {
				t.Fatalf("rotate: %v", rotated)
			}
			if again := mustRead(t, env.client, mount+"/creds/app"); str(again.Data["access_token"]) != str(first.Data["access_token"]) {
				t.Fatal("a key rotation replaced the cached token")
			}
			mustWrite(t, env.client, mount+"/rotate/app", nil)
			readActiveToken(t, env.client, mount+"/creds/app", id)
			if n := jwksFetches(t, jwksURI); n != 1 {
				t.Fatalf("after a publish-ahead rotation the provider fetched the JWKS %d times, want 1", n)
			}

			// Once the provider's cache has run out (as max-age makes it), a key it never saw signs: it
			// fetches the JWKS again and finds the kid.
			resp, err := httpClient.Post(env.ProviderURL+"/test/clients/"+url.PathEscape(id)+"/jwks-stale", "application/json", nil)
			must(t, err)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("jwks-stale: %s", resp.Status)
			}
			second := mustWrite(t, env.client, mount+"/keys/client/rotate", nil).Data
			mustWrite(t, env.client, mount+"/rotate/app", nil)
			readActiveToken(t, env.client, mount+"/creds/app", id)
			if n := jwksFetches(t, jwksURI); n != 2 {
				t.Fatalf("the provider fetched the JWKS %d times after its cache ran out, want 2", n)
			}
			kids, _ = vaultJWKS(t, mount)
			for _, kid := range []string{keyKID(key, "current"), keyKID(second, "current"), keyKID(second, "next")} {
				if !slices.Contains(kids, kid) {
					t.Fatalf("jwks %v lacks %s (retiring keys stay published)", kids, kid)
				}
			}

			// The key cannot go while the role uses it.
			if code, msg := vaultDelete(t, env.client, mount+"/keys/client"); code != http.StatusBadRequest || !strings.Contains(msg, "role app") {
				t.Fatalf("delete of a used key: %d %s", code, msg)
			}
		})
	}
}

// A role whose provider no longer takes client_secret falls back to client_secret_next,
// promotes it, and says so in its status.
func TestKeysClientSecretFallback(t *testing.T) {
	mount := configuredMount(t)
	id, secret := registerClient(t, nil)
	old := "retired-client-secret-" + id
	rememberSecret(kindClientSecret, old)
	mustWrite(t, env.client, mount+"/roles/app", map[string]any{
		"client_id": id, "auth_method": "client_secret_basic", "client_secret": old, "client_secret_next": secret, "scopes": "read",
	})
	readActiveToken(t, env.client, mount+"/creds/app", id)
	status := mustRead(t, env.client, mount+"/roles/app/status").Data
	if str(status["client_secret_promoted_at"]) == "" {
		t.Fatalf("status does not show the promotion: %v", status)
	}
	role := mustRead(t, env.client, mount+"/roles/app").Data
	if role["client_secret_next_set"] != false || role["client_secret_set"] != true {
		t.Fatalf("role after promotion: %v", role)
	}
	mustWrite(t, env.client, mount+"/rotate/app", nil)
	readActiveToken(t, env.client, mount+"/creds/app", id)
}

// tlsProvider is a second instance of the real provider, served over TLS and asking clients for
// certificates (lib/mtls.js), for mutual TLS client authentication.
type tlsProvider struct {
	issuer, certPEM string
	client          *http.Client
	discovery       struct {
		Registration  string `json:"registration_endpoint"`
		Introspection string `json:"introspection_endpoint"`
	}
}

func startTLSProvider(t *testing.T, clientCA *x509.Certificate) *tlsProvider {
	t.Helper()
	dir := t.TempDir()
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &serverKey.PublicKey, serverKey)
	must(t, err)
	p := &tlsProvider{certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
	files := map[string][]byte{
		"server.pem":     []byte(p.certPEM),
		"server-key.pem": pemKey(t, serverKey),
		"client-ca.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientCA.Raw}),
	}
	for name, data := range files {
		must(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	root, err := e2eharness.RepoRoot()
	must(t, err)
	cmd := exec.Command("node", "server.js")
	cmd.Dir = filepath.Join(root, "test", "provider")
	cmd.Env = append(e2eharness.CleanEnv(), "PORT=0", "INTROSPECTOR_SECRET=introspector-secret",
		"PROVIDER_TLS_CERT="+filepath.Join(dir, "server.pem"), "PROVIDER_TLS_KEY="+filepath.Join(dir, "server-key.pem"),
		"PROVIDER_TLS_CLIENT_CA="+filepath.Join(dir, "client-ca.pem"))
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	logFile, err := os.Create(filepath.Join(env.StateDir, "provider-tls.log"))
	must(t, err)
	cmd.Stderr = logFile
	must(t, cmd.Start())
	env.TrackPid(t, cmd.Process.Pid)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = logFile.Close()
	})
	listening := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			line := scanner.Text()
			_, _ = fmt.Fprintln(logFile, line)
			if rest, ok := strings.CutPrefix(line, "LISTENING "); ok {
				listening <- rest
			}
		}
	}()
	select {
	case p.issuer = <-listening:
	case <-time.After(30 * time.Second):
		t.Fatalf("the TLS provider did not start: %s", e2eharness.FileTail(logFile.Name(), 20))
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(p.certPEM))
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := p.client.Get(p.issuer + "/.well-known/openid-configuration")
	must(t, err)
	defer resp.Body.Close()
	must(t, json.NewDecoder(resp.Body).Decode(&p.discovery))
	return p
}

func pemKey(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	rememberSecret(kindPrivateKey, string(out))
	return out
}

func (p *tlsProvider) register(t *testing.T, metadata map[string]any) string {
	t.Helper()
	md := map[string]any{"grant_types": []string{"client_credentials"}, "scope": "read write", "response_types": []string{}, "redirect_uris": []string{}}
	for k, v := range metadata {
		md[k] = v
	}
	body, _ := json.Marshal(md)
	resp, err := p.client.Post(p.discovery.Registration, "application/json", bytes.NewReader(body))
	must(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		ClientID string `json:"client_id"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("registration at the TLS provider: %s: %s", resp.Status, raw)
	}
	return out.ClientID
}

func (p *tlsProvider) introspect(t *testing.T, token string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.discovery.Introspection, strings.NewReader(url.Values{"token": {token}}.Encode()))
	must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("introspector", "introspector-secret")
	resp, err := p.client.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var out map[string]any
	must(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// Mutual TLS client authentication (RFC 8705) with the real provider served over TLS:
// tls_client_auth with a CA-issued certificate and its pasted key, whose access tokens are bound
// to the certificate (cnf.x5t#S256), and self_signed_tls_client_auth with a mount key, whose
// self-signed certificate the provider finds in Vault's JWKS.
func TestKeysMTLS(t *testing.T) {
	subject := "payments-" + e2eharness.RandSuffix()
	pki, err := testprovider.NewClientPKI(subject)
	must(t, err)
	rememberSecret(kindPrivateKey, pki.KeyPEM)

	p := startTLSProvider(t, pki.CA)
	mount := newMount(t, "mtls")
	mustWrite(t, env.client, mount+"/config", map[string]any{"issuer": p.issuer, "ca_pem": p.certPEM})

	pkiID := p.register(t, map[string]any{
		"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=" + subject,
		"tls_client_certificate_bound_access_tokens": true,
	})
	mustWrite(t, env.client, mount+"/roles/pki", map[string]any{
		"client_id": pkiID, "auth_method": "tls_client_auth", "client_cert": pki.CertPEM, "client_key": pki.KeyPEM, "scopes": "read",
	})
	tok := str(mustRead(t, env.client, mount+"/creds/pki").Data["access_token"])
	in := p.introspect(t, tok)
	sum := sha256.Sum256(pki.Leaf.Raw)
	cnf, _ := in["cnf"].(map[string]any)
	if in["active"] != true || str(in["client_id"]) != pkiID || str(cnf["x5t#S256"]) != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Fatalf("tls_client_auth token: %v", in)
	}

	mustWrite(t, env.client, mount+"/keys/tls", map[string]any{"alg": "ES256"})
	selfID := p.register(t, map[string]any{
		"token_endpoint_auth_method": "self_signed_tls_client_auth", "jwks_uri": env.vaultAddr + "/v1/" + mount + "/jwks",
	})
	mustWrite(t, env.client, mount+"/roles/self", map[string]any{
		"client_id": selfID, "auth_method": "self_signed_tls_client_auth", "client_key_name": "tls", "scopes": "read",
	})
	in = p.introspect(t, str(mustRead(t, env.client, mount+"/creds/self").Data["access_token"]))
	if in["active"] != true || str(in["client_id"]) != selfID {
		t.Fatalf("self_signed_tls_client_auth token: %v", in)
	}
	// After a rotation the published-ahead key's certificate authenticates.
	mustWrite(t, env.client, mount+"/keys/tls/rotate", nil)
	mustWrite(t, env.client, mount+"/rotate/self", nil)
	in = p.introspect(t, str(mustRead(t, env.client, mount+"/creds/self").Data["access_token"]))
	if in["active"] != true || str(in["client_id"]) != selfID {
		t.Fatalf("self_signed_tls_client_auth token after a key rotation: %v", in)
	}
}
