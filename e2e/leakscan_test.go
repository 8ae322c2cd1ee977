//go:build e2e

package e2e

// The leak scan (issue 7, "Secrets never leak"). The helpers register every secret the suite
// hands to Vault or receives from it (rememberSecret) and record every answer they see outside
// creds reads, every error and warning text (recordResponse, recordText), and every body scraped
// from <mount>/metrics (recordMetrics, issue 16). After the last test TestMain searches Vault's
// server logs, the audit log and those records for each secret (leakScanPasses); one hit fails
// the run. Access tokens are expected in the creds answers the
// tests received, which are therefore not recorded; the audit log must hold them only as HMACs.
// Issue 13 adds the state of an authorize answer, the codes a browser carried, and what only the
// plugin and the provider see (PKCE verifiers, device codes, tokens obtained in the background),
// which the provider's /test/secrets tells (rememberProviderSecrets). One exception, reported
// but not failing: the code and state in the request_uri of an audited callback GET
// (callbackURIs). A role with response_mode=form_post has none: its browser POSTs them, and
// any of them in clear in the audit log fails the scan like any other secret.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"
)

// Secret kinds, as the report names them.
const (
	kindClientSecret = "client secret"
	kindPassword     = "password"
	kindRefreshToken = "refresh token"
	kindPrivateKey   = "private key"
	kindHMACSecret   = "HMAC shared secret"
	kindAccessToken  = "access token"
	// kindSecretTokenParam is a value of a role's secret_token_params (an API key, say), which
	// the plugin sends to the token endpoint and never shows.
	kindSecretTokenParam = "secret token parameter"
	// kindSubjectToken is a reader's subject token written to exchange/ (issue 18): never stored,
	// logged or echoed; the audit log holds it only as an HMAC.
	kindSubjectToken = "subject token"
	// The user-delegated grants (issue 13): the state the plugin hands out with an auth_url, the
	// code the browser brings back, the PKCE verifier and the device code only the plugin and
	// the provider ever see (the provider's /test/secrets tells them).
	kindState        = "state"
	kindAuthCode     = "authorization code"
	kindCodeVerifier = "PKCE verifier"
	kindDeviceCode   = "device code"
	// OAuth 1.0a roles sign with these (issue 14); the DPoP key, generated in Vault, is a
	// private key read from raw storage.
	kindConsumerSecret = "consumer secret"
	kindTokenSecret    = "token secret"
)

// minNeedle is the shortest text searched for: the scan's window, and short enough for the
// suite's one human-chosen secret, the password "alice-password".
const minNeedle = 12

// leakRegistry holds the secrets to look for and the texts recorded to look in.
type leakRegistry struct {
	mu       sync.Mutex
	secrets  map[string]map[string]bool // value → kinds
	tooShort map[string]int             // kind → secrets shorter than minNeedle (not searchable)
	texts    []leakSource
}

// leakSource is one text searched: a log file or a recorded answer or error. Hits of the
// tolerated kinds are reported but do not fail the scan.
type leakSource struct {
	name      string
	data      []byte
	tolerated map[string]bool
}

// The query strings of the browser's callbacks, which Vault's audit device writes in clear as the
// request's request_uri (it HMACs the parameters only in request.data): the authorization code
// and the state are there, as in the audit log of Vault's own OIDC auth method. Both are single
// use and spent by the callback, and the code is worthless without the PKCE verifier and the
// client's credentials; any other secret there still fails the scan.
const callbackURIs = "audit.log request_uri of browser callbacks"

var callbackURITolerates = map[string]bool{kindAuthCode: true, kindState: true}

// splitCallbackURIs takes the request_uri of every audited GET of a callback path out of the
// audit log, into a source of its own (see callbackURIs).
func splitCallbackURIs(audit []byte) (rest, uris []byte) {
	lines := bytes.Split(audit, []byte("\n"))
	for i, line := range lines {
		var e struct {
			Request struct {
				Operation  string `json:"operation"`
				Path       string `json:"path"`
				RequestURI string `json:"request_uri"`
			} `json:"request"`
		}
		if json.Unmarshal(line, &e) != nil || e.Request.Operation != "read" || !strings.HasSuffix(e.Request.Path, "/callback") || e.Request.RequestURI == "" {
			continue
		}
		encoded, err := json.Marshal(e.Request.RequestURI)
		if err != nil || !bytes.Contains(line, encoded) {
			continue // left in place: scanned, and failing, like any other line
		}
		lines[i] = bytes.ReplaceAll(line, encoded, []byte(`"(see `+callbackURIs+`)"`))
		uris = append(append(uris, e.Request.RequestURI...), '\n')
	}
	return bytes.Join(lines, []byte("\n")), uris
}

var leaks = newLeakRegistry()

func newLeakRegistry() *leakRegistry {
	return &leakRegistry{secrets: map[string]map[string]bool{}, tooShort: map[string]int{}}
}

// rememberSecret registers a secret the suite used; empty values are ignored.
func rememberSecret(kind, value string) { leaks.remember(kind, value) }

// rememberProviderSecrets registers everything the provider issued to a client or received from
// it: tokens the plugin obtained in the background, codes, device codes, PKCE verifiers.
func rememberProviderSecrets(t testing.TB, clientID string) {
	t.Helper()
	got := env.ProviderSecrets(t, clientID)
	for kind, values := range map[string][]string{
		kindAccessToken: got.AccessTokens, kindRefreshToken: got.RefreshTokens, kindAuthCode: got.AuthorizationCodes,
		kindDeviceCode: got.DeviceCodes, kindCodeVerifier: got.CodeVerifiers,
	} {
		for _, v := range values {
			rememberSecret(kind, v)
		}
	}
}

// recordText records an error or warning text a helper saw.
func recordText(where, text string) { leaks.record(where, text) }

// metricsSource names a recorded metrics body in the report.
const metricsSource = "metrics scrape of "

// recordMetrics records a body scraped from a mount's metrics endpoint (what: the path), in which
// no secret may appear: labels carry role names, grant types and failure kinds only.
func recordMetrics(what string, body []byte) { leaks.record(metricsSource+what, string(body)) }

// recordResponse records what Vault answered to `what` ("read PATH", ...): the warnings always;
// the access token of a creds or exchange answer, or of a DPoP sign answer ("DPoP <token>"), as a
// secret; the state of an authorize answer as a secret and the rest of that answer (its auth_url
// carries the state); every other answer whole.
func recordResponse(what string, s *api.Secret) {
	if s == nil {
		return
	}
	for _, w := range s.Warnings {
		recordText("warning of "+what, w)
	}
	if strings.Contains(what, "/creds/") || strings.Contains(what, "/exchange/") {
		rememberSecret(kindAccessToken, str(s.Data["access_token"]))
		return
	}
	if token, ok := strings.CutPrefix(str(s.Data["authorization"]), "DPoP "); ok && strings.Contains(what, "/sign/") {
		rememberSecret(kindAccessToken, token)
		return
	}
	if strings.Contains(what, "/authorize/") {
		rememberSecret(kindState, str(s.Data["state"]))
		rest := *s
		rest.Data = map[string]any{}
		for k, v := range s.Data {
			if k != "state" && k != "auth_url" {
				rest.Data[k] = v
			}
		}
		s = &rest
	}
	b, err := json.Marshal(s)
	if err != nil {
		b = []byte(fmt.Sprintf("%#v", s))
	}
	recordText("answer to "+what, string(b))
}

func (r *leakRegistry) remember(kind, value string) {
	if value == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secrets[value] == nil {
		r.secrets[value] = map[string]bool{}
	}
	r.secrets[value][kind] = true
}

func (r *leakRegistry) record(where, text string) {
	if text == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.texts = append(r.texts, leakSource{name: where, data: []byte(text)})
}

// needle is one text to search for, and how to name it without revealing it.
type needle struct {
	text  string
	kind  string
	label string
}

// needles turns the secrets into search texts: a PEM key into its base64 body lines (the header
// is public, and a log may escape the newlines), every secret also in its URL-encoded form.
func (r *leakRegistry) needles() []needle {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tooShort = map[string]int{}
	var out []needle
	add := func(text, kind, label string) {
		if len(text) < minNeedle {
			r.tooShort[kind]++
			return
		}
		out = append(out, needle{text: text, kind: kind, label: label})
		if esc := url.QueryEscape(text); esc != text {
			out = append(out, needle{text: esc, kind: kind, label: label + " URL-encoded"})
		}
	}
	for value, kinds := range r.secrets {
		for kind := range kinds {
			if kind != kindPrivateKey {
				add(value, kind, fingerprint(value))
				continue
			}
			for i, line := range pemBodyLines(value) {
				add(line, kind, fmt.Sprintf("%s line %d", fingerprint(line), i+1))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kind+out[i].label < out[j].kind+out[j].label })
	return out
}

// pemBodyLines are the base64 lines of a PEM text (without BEGIN/END and headers).
func pemBodyLines(text string) []string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "-----") || strings.Contains(l, ":") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// fingerprint names a secret in a report: its first 4 characters and its length.
func fingerprint(s string) string {
	return fmt.Sprintf("%q…(%d chars)", s[:min(4, len(s))], len(s))
}

// leakHit is one secret found in one source.
type leakHit struct {
	source, kind, label string
	count, firstLine    int
	tolerated           bool // a kind its source tolerates
}

func (h leakHit) String() string {
	return fmt.Sprintf("%s %s found in %s: %d time(s), first on line %d", h.kind, h.label, h.source, h.count, h.firstLine)
}

// findLeaks searches every source for every needle: a map lookup of each window of minNeedle
// bytes, so that many secrets cost no more than one pass over a large log.
func findLeaks(needles []needle, sources []leakSource) []leakHit {
	byPrefix := map[string][]int{}
	for i, n := range needles {
		p := n.text[:minNeedle]
		byPrefix[p] = append(byPrefix[p], i)
	}
	var hits []leakHit
	for _, src := range sources {
		found := map[int]*leakHit{}
		data := src.data
		for i := 0; i+minNeedle <= len(data); i++ {
			idx, ok := byPrefix[string(data[i:i+minNeedle])]
			if !ok {
				continue
			}
			for _, ni := range idx {
				if !bytes.HasPrefix(data[i:], []byte(needles[ni].text)) {
					continue
				}
				h := found[ni]
				if h == nil {
					h = &leakHit{source: src.name, kind: needles[ni].kind, label: needles[ni].label, firstLine: bytes.Count(data[:i], []byte("\n")) + 1, tolerated: src.tolerated[needles[ni].kind]}
					found[ni] = h
				}
				h.count++
			}
		}
		for _, h := range found {
			hits = append(hits, *h)
		}
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].String() < hits[j].String() })
	return hits
}

// runLogs reads the logs of this run: the dev Vault's server and audit logs (both must exist and
// hold something, or the scan would pass on nothing) and the server logs of the raft Vaults that
// TestRefresh starts in subdirectories of the state dir.
func runLogs(stateDir string) ([]leakSource, error) {
	var out []leakSource
	for _, name := range []string{"vault.log", "audit.log"} {
		b, err := os.ReadFile(filepath.Join(stateDir, name))
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("%s is empty", filepath.Join(stateDir, name))
		}
		if name == "audit.log" {
			var uris []byte
			b, uris = splitCallbackURIs(b)
			out = append(out, leakSource{name: callbackURIs, data: uris, tolerated: callbackURITolerates})
		}
		out = append(out, leakSource{name: name, data: b})
	}
	extra, err := filepath.Glob(filepath.Join(stateDir, "raft-*", "*.log"))
	if err != nil {
		return nil, err
	}
	for _, f := range extra {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(stateDir, f)
		out = append(out, leakSource{name: rel, data: b})
	}
	return out, nil
}

// leakScanPasses runs the scan over this run's logs and records and reports on w; it is false on
// any hit or when the logs cannot be read.
func leakScanPasses(w io.Writer) bool {
	logs, err := runLogs(env.StateDir)
	if err != nil {
		// The scan fails either way; a report that cannot be written changes nothing.
		_, _ = fmt.Fprintf(w, "\n=== e2e leak scan FAILED: cannot read Vault's logs: %v ===\n", err)
		return false
	}
	return leaks.scan(w, logs)
}

// scan searches the logs and the recorded texts for the registered secrets, and reports on w. It
// passes only when nothing is found and the report was written: a pass nobody can read is none.
func (r *leakRegistry) scan(w io.Writer, logs []leakSource) bool {
	needles := r.needles()
	r.mu.Lock()
	sources := append(append([]leakSource(nil), logs...), r.texts...)
	kinds := map[string]int{}
	for _, ks := range r.secrets {
		for k := range ks {
			kinds[k]++
		}
	}
	tooShort, records, scrapes := r.tooShort, len(r.texts), 0
	for _, t := range r.texts {
		if strings.HasPrefix(t.name, metricsSource) {
			scrapes++
		}
	}
	r.mu.Unlock()

	var hits, tolerated []leakHit
	for _, h := range append(findLeaks(needles, sources), findMountKeyShapes(sources)...) {
		if h.tolerated {
			tolerated = append(tolerated, h)
		} else {
			hits = append(hits, h)
		}
	}
	var report strings.Builder
	var files []string
	for _, l := range logs {
		files = append(files, fmt.Sprintf("%s (%d KB)", l.name, len(l.data)>>10))
	}
	fmt.Fprintf(&report, "\ne2e leak scan: secrets registered: %s; searched %s and %d recorded answers, error texts and metrics scrapes (%d scrapes): %d hit(s)\n",
		countsByKind(kinds), strings.Join(files, ", "), records, scrapes, len(hits))
	if len(tooShort) > 0 {
		fmt.Fprintf(&report, "e2e leak scan: NOT searchable (shorter than %d chars): %s\n", minNeedle, countsByKind(tooShort))
	}
	for _, h := range tolerated {
		fmt.Fprintf(&report, "e2e leak scan: tolerated: %s\n", h)
	}
	for _, h := range hits {
		fmt.Fprintf(&report, "e2e leak scan: LEAK: %s\n", h)
	}
	if len(hits) > 0 {
		fmt.Fprintf(&report, "=== e2e leak scan FAILED: %d secret(s) found where none may be ===\n", len(hits))
	}
	if _, err := io.WriteString(w, report.String()); err != nil {
		return false
	}
	return len(hits) == 0
}

// mountKeyShape matches a mount key's private half outside Vault's storage: the private JWK
// member "d", or the stored PKCS #8 DER ("private":"MI…"), JSON-escaped or not. The suite never
// sees those keys (they are born in Vault), so their shape is searched for instead of their value.
var mountKeyShape = regexp.MustCompile(`\\?"(d|private)\\?"\s*:\s*\\?"(MI[A-Za-z0-9+/]{20}|[A-Za-z0-9_-]{40})`)

func findMountKeyShapes(sources []leakSource) []leakHit {
	var hits []leakHit
	for _, s := range sources {
		if found := mountKeyShape.FindAllIndex(s.data, -1); len(found) > 0 {
			line := bytes.Count(s.data[:found[0][0]], []byte("\n")) + 1
			hits = append(hits, leakHit{source: s.name, kind: kindPrivateKey, label: "of a mount key (its shape)", count: len(found), firstLine: line})
		}
	}
	return hits
}

func TestLeakScannerFindsMountKeyShapes(t *testing.T) {
	private := `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIScu1AVCDERaXm4aJ9rqeAqPBJR8ds"}`
	stored := `{"current":{"kid":"k","private":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"}}`
	public := `{"kty":"EC","crv":"P-256","kid":"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`
	escaped, _ := json.Marshal(private)
	hits := findMountKeyShapes([]leakSource{{name: "a", data: []byte(private)}, {name: "b", data: []byte(stored)}, {name: "c", data: escaped}, {name: "d", data: []byte(public)}})
	if len(hits) != 3 || hits[0].source != "a" || hits[1].source != "b" || hits[2].source != "c" {
		t.Fatalf("hits: %v", hits)
	}
}

func countsByKind(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// TestLeakScannerFindsPlantedSecrets proves the scan is real: secrets planted the way a careless
// log line or answer would carry them are found and reported without being revealed, and an
// audit-style HMAC of them is not a hit.
func TestLeakScannerFindsPlantedSecrets(t *testing.T) {
	r := newLeakRegistry()
	clientSecret := "cs-" + randSuffix() + randSuffix() + randSuffix()
	refreshToken := "rt+" + randSuffix() + "/" + randSuffix() + "=" // needs URL encoding
	accessToken := "at-" + randSuffix() + randSuffix()
	apiKey := "stp-" + randSuffix() + randSuffix()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	for kind, v := range map[string]string{kindClientSecret: clientSecret, kindRefreshToken: refreshToken, kindAccessToken: accessToken, kindPrivateKey: keyPEM, kindSecretTokenParam: apiKey} {
		r.remember(kind, v)
	}
	r.remember(kindPassword, "short") // too short to search: reported, never silently skipped

	dir := t.TempDir()
	logPath := filepath.Join(dir, "vault.log")
	escapedPEM, err := json.Marshal(map[string]string{"client_key": keyPEM})
	must(t, err)
	leaky := strings.Join([]string{
		`2025-01-01T00:00:00Z [TRACE] secrets.oauth: request: body="grant_type=client_credentials&client_secret=` + clientSecret + `"`,
		`{"type":"request","request":{"data":` + string(escapedPEM) + `}}`,
		`2025-01-01T00:00:01Z [DEBUG] refresh_token=` + url.QueryEscape(refreshToken),
		`{"type":"response","response":{"data":{"access_token":"hmac-sha256:0123abcd"}}}`,
		`2025-01-01T00:00:02Z [DEBUG] secrets.oauth: token request: params=map[api_key:` + apiKey + `]`,
	}, "\n")
	must(t, os.WriteFile(logPath, []byte(leaky), 0o600))
	logData, err := os.ReadFile(logPath)
	must(t, err)
	r.record("warning of read m/creds/app", "serving the cached token "+accessToken)
	r.record(metricsSource+"m/metrics", "# TYPE vault_oauth_roles gauge\nvault_oauth_roles 1\n"+
		`vault_oauth_grants_total{role="app",grant_type="client_credentials",outcome="`+refreshToken+`"} 1`+"\n")

	var report bytes.Buffer
	if r.scan(&report, []leakSource{{name: "vault.log", data: logData}}) {
		t.Fatalf("the scan passed over planted secrets:\n%s", report.String())
	}
	out := report.String()
	defer func() {
		if t.Failed() {
			t.Logf("report:\n%s", out)
		}
	}()
	for _, want := range []string{
		kindClientSecret + ` "cs-`, kindRefreshToken + ` "rt+`, kindPrivateKey + ` "MIG`,
		"in vault.log", kindAccessToken + ` "at-`, kindSecretTokenParam + ` "stp-`, "in warning of read m/creds/app", "NOT searchable", "(1 scrapes)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	inMetrics := false
	for _, line := range strings.Split(out, "\n") {
		inMetrics = inMetrics || (strings.Contains(line, "LEAK: "+kindRefreshToken) && strings.Contains(line, "found in "+metricsSource+"m/metrics"))
	}
	if !inMetrics {
		t.Error("the report lacks the refresh token planted in a metrics scrape")
	}
	for _, secret := range append([]string{clientSecret, refreshToken, url.QueryEscape(refreshToken), accessToken, apiKey}, pemBodyLines(keyPEM)...) {
		if strings.Contains(out, secret) {
			t.Errorf("the report reveals a secret (%s)", fingerprint(secret))
		}
	}
	if n := len(pemBodyLines(keyPEM)); n < 2 {
		t.Fatalf("the PEM key has %d body lines", n)
	}

	clean := newLeakRegistry()
	clean.remember(kindClientSecret, clientSecret)
	report.Reset()
	if !clean.scan(&report, []leakSource{{name: "audit.log", data: []byte(`{"client_secret":"hmac-sha256:5f2e"}` + "\n")}}) {
		t.Errorf("a log without the secret is reported as a leak:\n%s", report.String())
	}
}

// TestLeakScannerCallbackURIs: a code and a state in the request_uri of an audited callback GET
// are reported as tolerated; a token there, or a code anywhere else in the audit log, fails.
func TestLeakScannerCallbackURIs(t *testing.T) {
	code, state := "code-"+randSuffix()+randSuffix(), "state-"+randSuffix()+randSuffix()
	token := "at-" + randSuffix() + randSuffix()
	entry := func(op, path, uri string) string {
		b, err := json.Marshal(map[string]any{"type": "request", "request": map[string]any{
			"operation": op, "path": path, "request_uri": uri, "data": map[string]any{"code": "hmac-sha256:00"},
		}})
		must(t, err)
		return string(b)
	}
	scan := func(lines ...string) (bool, string) {
		r := newLeakRegistry()
		r.remember(kindAuthCode, code)
		r.remember(kindState, state)
		r.remember(kindAccessToken, token)
		rest, uris := splitCallbackURIs([]byte(strings.Join(lines, "\n") + "\n"))
		var report bytes.Buffer
		ok := r.scan(&report, []leakSource{
			{name: callbackURIs, data: uris, tolerated: callbackURITolerates},
			{name: "audit.log", data: rest},
		})
		return ok, report.String()
	}

	callback := entry("read", "oauth/callback", "/v1/oauth/callback?code="+code+"&state="+state)
	if ok, report := scan(callback); !ok || !strings.Contains(report, "tolerated: "+kindAuthCode) || !strings.Contains(report, "tolerated: "+kindState) {
		t.Errorf("a callback's request_uri should be reported as tolerated, not fail:\n%s", report)
	}
	for name, line := range map[string]string{
		"a token in a callback's request_uri":  entry("read", "oauth/callback", "/v1/oauth/callback?access_token="+token),
		"a code in another path's request_uri": entry("read", "oauth/creds/app", "/v1/oauth/creds/app?code="+code),
		"a code in a pasted callback's write":  entry("update", "oauth/callback", "/v1/oauth/callback?code="+code),
		"a state in a form post's data":        `{"request":{"operation":"update","path":"oauth/callback","request_uri":"/v1/oauth/callback","data":{"state":"` + state + `"}}}`,
		"a code outside request_uri":           `{"request":{"operation":"read","path":"oauth/callback","data":{"code":"` + code + `"}}}`,
	} {
		if ok, report := scan(callback, line); ok || !strings.Contains(report, "LEAK") {
			t.Errorf("%s passed the scan:\n%s", name, report)
		}
	}
}
