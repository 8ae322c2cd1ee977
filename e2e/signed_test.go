//go:build e2e

package e2e

// Signed requests (issue 14): Vault signs, the application sends. OAuth 1.0a requests signed by
// sign/ are sent to test/oauth1server, which verifies them with Python's oauthlib; a DPoP role
// gets a DPoP-bound token from the real provider (test/provider, oidc-provider with server
// nonces) and its userinfo endpoint accepts the proofs sign/ makes.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // oauth_body_hash of HMAC-SHA1 and RSA-SHA1
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// startOAuth1Server runs test/oauth1server and returns its base URL; it stops with the test.
func startOAuth1Server(t *testing.T) string {
	t.Helper()
	python := ""
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import oauthlib, jwt, cryptography").Run() == nil {
			python = path
			break
		}
	}
	if python == "" {
		t.Fatal("the OAuth 1.0a test server needs python3 with oauthlib, pyjwt and cryptography (Debian: python3-oauthlib python3-jwt python3-cryptography)")
	}
	cmd := exec.Command(python, filepath.Join(env.Root, "test", "oauth1server", "server.py"))
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "LISTENING ") {
		t.Fatalf("the OAuth 1.0a test server did not start: %q", lines.Text())
	}
	base := strings.TrimPrefix(lines.Text(), "LISTENING ")
	go func() { // keep draining its request log
		for lines.Scan() {
		}
	}()
	return base
}

// postJSON posts a JSON body and fails the test unless the answer is 2xx.
func postJSON(t *testing.T, endpoint string, body any) {
	t.Helper()
	raw, err := json.Marshal(body)
	must(t, err)
	resp, err := httpClient.Post(endpoint, "application/json", bytes.NewReader(raw))
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		out, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s: %s", endpoint, resp.Status, out)
	}
}

// send performs a request with the headers sign/ made, returning status, headers and JSON body.
func send(t *testing.T, method, target, contentType, body string, headers map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	must(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, resp.Header, out
}

func TestSignedOAuth1(t *testing.T) {
	t.Parallel()
	server := startOAuth1Server(t)
	mount := newMount(t, "signed")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	must(t, err)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	must(t, err)
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	rememberSecret(kindPrivateKey, keyPEM)

	for _, method := range []string{"HMAC-SHA1", "HMAC-SHA256", "RSA-SHA1"} {
		t.Run(method, func(t *testing.T) {
			role := strings.ToLower(method)
			consumerKey, token := "ck-"+randSuffix(), "tok-"+randSuffix()
			consumerSecret, tokenSecret := "cs+/ &é-"+randSuffix()+randSuffix(), "ts=%-"+randSuffix()+randSuffix()
			rememberSecret(kindConsumerSecret, consumerSecret)
			rememberSecret(kindTokenSecret, tokenSecret)
			postJSON(t, server+"/test/consumers", map[string]any{"consumer_key": consumerKey, "consumer_secret": consumerSecret, "rsa_public_key": pubPEM})
			postJSON(t, server+"/test/tokens", map[string]any{"consumer_key": consumerKey, "token": token, "token_secret": tokenSecret})
			fields := map[string]any{"grant_type": "oauth1", "signature_method": method, "consumer_key": consumerKey, "token": token, "token_secret": tokenSecret}
			if method == "RSA-SHA1" {
				fields["consumer_private_key"] = keyPEM
			} else {
				fields["consumer_secret"] = consumerSecret
			}
			mustWrite(t, env.client, mount+"/roles/"+role, fields)
			read := mustRead(t, env.client, mount+"/roles/"+role)
			if read.Data["consumer_key"] != consumerKey || read.Data["token_secret_set"] != true {
				t.Fatalf("role read: %v", read.Data)
			}

			sign := func(data map[string]any) map[string]string {
				t.Helper()
				s := mustWrite(t, env.client, mount+"/sign/"+role, data)
				return map[string]string{"Authorization": str(s.Data["authorization"])}
			}
			// Query with a repeated name, an empty value, reserved and non-ASCII characters.
			query := server + "/1.1/statuses/home_timeline.json?count=5&a=2&a=1&empty=&q=%E2%98%83+%2F%3F%26%3D"
			headers := sign(map[string]any{"method": "GET", "url": query})
			code, _, out := send(t, "GET", query, "", "", headers)
			if code != http.StatusOK || out["token"] != token {
				t.Fatalf("GET signed by Vault: HTTP %d %v", code, out)
			}
			if code, _, out := send(t, "GET", query, "", "", headers); code != http.StatusUnauthorized || out["error"] != "nonce replayed" {
				t.Fatalf("a replayed request: HTTP %d %v", code, out)
			}
			tampered := strings.Replace(query, "count=5", "count=6", 1)
			if code, _, out := send(t, "GET", tampered, "", "", sign(map[string]any{"method": "GET", "url": query})); code != http.StatusUnauthorized || out["error"] != "bad signature" {
				t.Fatalf("a request other than the one signed: HTTP %d %v", code, out)
			}

			// A form body's parameters take part in the signature.
			form := url.Values{"status": {"Hello Ladies + Gentlemen, a signed OAuth request!"}, "tag": {"x", "y", ""}, "ünï": {"çødé ☃"}}
			var params []any
			for k, vs := range form {
				for _, v := range vs {
					params = append(params, k+"="+v)
				}
			}
			post := server + "/1.1/statuses/update.json?include_entities=true"
			headers = sign(map[string]any{"method": "POST", "url": post, "params": params})
			if code, _, out := send(t, "POST", post, "application/x-www-form-urlencoded", form.Encode(), headers); code != http.StatusOK {
				t.Fatalf("POST form signed by Vault: HTTP %d %v", code, out)
			}

			// A JSON body is covered by oauth_body_hash.
			body := `{"text":"hello"}`
			var digest []byte
			if method == "HMAC-SHA256" {
				sum := sha256.Sum256([]byte(body))
				digest = sum[:]
			} else {
				sum := sha1.Sum([]byte(body)) //nolint:gosec // the extension's hash for SHA-1 methods
				digest = sum[:]
			}
			put := server + "/2/items/42"
			headers = sign(map[string]any{"method": "PUT", "url": put, "body_hash": base64.StdEncoding.EncodeToString(digest)})
			if code, _, out := send(t, "PUT", put, "application/json", body, headers); code != http.StatusOK {
				t.Fatalf("PUT JSON with oauth_body_hash: HTTP %d %v", code, out)
			}
			if code, _, out := send(t, "PUT", put, "application/json", `{"text":"changed"}`, sign(map[string]any{"method": "PUT", "url": put, "body_hash": base64.StdEncoding.EncodeToString(digest)})); code != http.StatusUnauthorized {
				t.Fatalf("a body other than the one hashed: HTTP %d %v", code, out)
			}

			if _, code, msg := vaultRead(t, env.client, mount+"/creds/"+role, nil); code != http.StatusBadRequest || !strings.Contains(msg, "sign/"+role) {
				t.Fatalf("creds on an oauth1 role: HTTP %d %s", code, msg)
			}
		})
	}

	t.Run("three-legged", func(t *testing.T) {
		consumerKey, consumerSecret := "ck-3l-"+randSuffix(), "cs-3l-"+randSuffix()+randSuffix()
		rememberSecret(kindConsumerSecret, consumerSecret)
		postJSON(t, server+"/test/consumers", map[string]any{"consumer_key": consumerKey, "consumer_secret": consumerSecret})
		callback := env.vaultAddr + "/v1/" + mount + "/callback"
		mustWrite(t, env.client, mount+"/roles/three-legged", map[string]any{
			"grant_type": "oauth1", "consumer_key": consumerKey, "consumer_secret": consumerSecret,
			"request_token_url": server + "/oauth/request_token", "authorize_url": server + "/oauth/authorize",
			"access_token_url": server + "/oauth/access_token", "redirect_uri": callback,
		})
		target := server + "/1.1/account/settings.json"
		if _, code, msg := vaultWrite(t, env.client, mount+"/sign/three-legged", map[string]any{"url": target}); code != http.StatusBadRequest || !strings.Contains(msg, "authorize/three-legged") {
			t.Fatalf("sign before the authorization: HTTP %d %s", code, msg)
		}
		started := mustWrite(t, env.client, mount+"/authorize/three-legged", map[string]any{})
		// The temporary credentials' secret (RFC 5849 §2.1) only the plugin and the server see.
		rememberSecret(kindTokenSecret, str(rawEntry(t, mount, "authz/three-legged")["temporary_secret"]))
		// The person's browser: the server approves and redirects to Vault's callback, which
		// needs no Vault token.
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(str(started.Data["auth_url"]))
		must(t, err)
		resp.Body.Close()
		location := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(location, callback+"?") {
			t.Fatalf("authorization: HTTP %d, Location %q", resp.StatusCode, location)
		}
		// The verifier (§2.2) is the OAuth 1.0a counterpart of an authorization code.
		back, err := url.Parse(location)
		must(t, err)
		rememberSecret(kindAuthCode, back.Query().Get("oauth_verifier"))
		resp, err = noFollow.Get(location)
		must(t, err)
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		recordText("callback page", string(page))
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "three-legged") {
			t.Fatalf("callback: HTTP %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
		}
		if st := mustRead(t, env.client, mount+"/roles/three-legged/status"); st.Data["authorization"] != "authorized" {
			t.Fatalf("status after the callback: %v", st.Data)
		}
		stored := rawRole(t, mount, "three-legged")
		rememberSecret(kindTokenSecret, str(stored["token_secret"]))
		s := mustWrite(t, env.client, mount+"/sign/three-legged", map[string]any{"url": target})
		if code, _, out := send(t, "GET", target, "", "", map[string]string{"Authorization": str(s.Data["authorization"])}); code != http.StatusOK || out["token"] != stored["token"] {
			t.Fatalf("request signed with the token the flow obtained: HTTP %d %v", code, out)
		}
	})

	// The README's policy: an application that may only sign.
	signer := newClientWithPolicy(t, "signer-"+randSuffix(), `path "`+mount+`/sign/*" { capabilities = ["update"] }`)
	target := server + "/1.1/account/verify_credentials.json"
	s := mustWrite(t, signer, mount+"/sign/hmac-sha1", map[string]any{"url": target})
	if code, _, out := send(t, "GET", target, "", "", map[string]string{"Authorization": str(s.Data["authorization"])}); code != http.StatusOK {
		t.Fatalf("request signed under the sign-only policy: HTTP %d %v", code, out)
	}
	for _, path := range []string{mount + "/roles/hmac-sha1", mount + "/creds/hmac-sha1"} {
		if _, code, _ := vaultRead(t, signer, path, nil); code != http.StatusForbidden {
			t.Fatalf("the sign-only policy reads %s: HTTP %d", path, code)
		}
	}
}

func TestSignedDPoP(t *testing.T) {
	t.Parallel()
	id, secret := registerClient(t, map[string]any{"grant_types": []string{"password", "refresh_token"}, "scope": "openid read"})
	refreshToken := openIDRefreshToken(t, id, secret, "openid read")
	mount := configuredMount(t)
	mustWrite(t, env.client, mount+"/roles/api", map[string]any{
		"grant_type": "refresh_token", "client_id": id, "client_secret": secret, "refresh_token": refreshToken, "dpop": true,
	})
	rememberDPoPKey(t, mount, "api")

	// The provider demands its nonce at the token endpoint too: the first request is answered
	// use_dpop_nonce, and the plugin sends it again, once, with the nonce.
	before := env.ProviderStats(t).ByClient[id]
	creds := mustRead(t, env.client, mount+"/creds/api")
	if n := env.ProviderStats(t).ByClient[id] - before; n != 2 {
		t.Fatalf("the first DPoP token request took %d requests, want 2 (use_dpop_nonce, then the retry)", n)
	}
	at := str(creds.Data["access_token"])
	if creds.Data["token_type"] != "DPoP" {
		t.Fatalf("token_type %v", creds.Data["token_type"])
	}
	status := mustRead(t, env.client, mount+"/roles/api/status")
	jkt := str(status.Data["dpop_jkt"])
	in := introspect(t, at)
	cnf, _ := in["cnf"].(map[string]any)
	if jkt == "" || cnf == nil || cnf["jkt"] != jkt || in["token_type"] != "DPoP" {
		t.Fatalf("the provider did not bind the token to the role's key %q: %v", jkt, in)
	}

	userinfo := userinfoEndpoint(t)
	if code, _, _ := send(t, "GET", userinfo, "", "", map[string]string{"Authorization": "Bearer " + at}); code != http.StatusUnauthorized {
		t.Fatalf("a DPoP-bound token was accepted as a bearer token: HTTP %d", code)
	}
	// The provider demands its nonce: the first proof is refused with one to use.
	signed := mustWrite(t, env.client, mount+"/sign/api", map[string]any{"method": "GET", "url": userinfo + "?schema=openid#x"})
	if signed.Data["authorization"] != "DPoP "+at {
		t.Fatalf("authorization %v", signed.Data["authorization"])
	}
	code, header, _ := send(t, "GET", userinfo, "", "", map[string]string{"Authorization": str(signed.Data["authorization"]), "DPoP": str(signed.Data["dpop"])})
	nonce := header.Get("DPoP-Nonce")
	if code != http.StatusUnauthorized || nonce == "" || !strings.Contains(header.Get("WWW-Authenticate"), "use_dpop_nonce") {
		t.Fatalf("proof without the server's nonce: HTTP %d, WWW-Authenticate %q", code, header.Get("WWW-Authenticate"))
	}
	signed = mustWrite(t, env.client, mount+"/sign/api", map[string]any{"method": "GET", "url": userinfo, "nonce": nonce})
	headers := map[string]string{"Authorization": str(signed.Data["authorization"]), "DPoP": str(signed.Data["dpop"])}
	code, _, claims := send(t, "GET", userinfo, "", "", headers)
	if code != http.StatusOK || claims["sub"] != "alice" {
		t.Fatalf("userinfo with a proof from sign/: HTTP %d %v", code, claims)
	}
	if code, _, _ := send(t, "GET", userinfo, "", "", headers); code != http.StatusUnauthorized {
		t.Fatalf("a replayed proof was accepted: HTTP %d", code)
	}
	// A proof is for one method and URL.
	signed = mustWrite(t, env.client, mount+"/sign/api", map[string]any{"method": "POST", "url": userinfo, "nonce": nonce})
	if code, _, _ := send(t, "GET", userinfo, "", "", map[string]string{"Authorization": str(signed.Data["authorization"]), "DPoP": str(signed.Data["dpop"])}); code != http.StatusUnauthorized {
		t.Fatalf("a proof for POST was accepted for GET: HTTP %d", code)
	}

	// A refresh through the plugin stays bound to the key.
	mustWrite(t, env.client, mount+"/rotate/api", map[string]any{})
	next := str(mustRead(t, env.client, mount+"/creds/api").Data["access_token"])
	if next == at {
		t.Fatal("rotate kept the token")
	}
	if in := introspect(t, next); in["active"] != true || in["cnf"].(map[string]any)["jkt"] != jkt {
		t.Fatalf("the rotated token is not bound to the role's key: %v", in)
	}
}

// openIDRefreshToken signs alice in with the password grant at the provider, for scope.
func openIDRefreshToken(t *testing.T, id, secret, scope string) string {
	t.Helper()
	rt := env.ObtainRefreshToken(t, id, secret, scope)
	rememberSecret(kindPassword, "alice-password")
	rememberSecret(kindRefreshToken, rt)
	return rt
}

func userinfoEndpoint(t *testing.T) string {
	t.Helper()
	resp, err := httpClient.Get(env.ProviderURL + "/.well-known/openid-configuration")
	must(t, err)
	defer resp.Body.Close()
	var md struct {
		Userinfo string `json:"userinfo_endpoint"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&md))
	if md.Userinfo == "" {
		t.Fatal("the provider has no userinfo endpoint")
	}
	return md.Userinfo
}

// rememberDPoPKey registers for the leak scan the DPoP key the plugin generated, which no answer
// shows.
func rememberDPoPKey(t *testing.T, mount, role string) {
	t.Helper()
	key := str(rawRole(t, mount, role)["dpop_key"])
	if !strings.Contains(key, "PRIVATE KEY") {
		t.Fatal("the stored role holds no DPoP key")
	}
	rememberSecret(kindPrivateKey, key)
}

// rawRole is the role as the plugin stored it, read through sys/raw (the test Vault enables it):
// secrets that no answer shows, for the leak scan.
func rawRole(t *testing.T, mount, role string) map[string]any {
	t.Helper()
	return rawEntry(t, mount, "roles/"+role)
}

// rawEntry is the JSON entry the plugin stored at key, read through sys/raw.
func rawEntry(t *testing.T, mount, key string) map[string]any {
	t.Helper()
	m, err := env.client.Sys().GetMount(mount)
	must(t, err)
	raw, err := env.client.Logical().Read("sys/raw/logical/" + m.UUID + "/" + key)
	if err != nil || raw == nil {
		t.Fatalf("reading the stored %s through sys/raw: %v", key, err)
	}
	entry := map[string]any{}
	must(t, json.Unmarshal([]byte(str(raw.Data["value"])), &entry))
	return entry
}
