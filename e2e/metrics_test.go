//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/faultproxy"
)

// <mount>/metrics through the real Vault (issue 16), scraped over HTTP as Prometheus does.

const (
	// The two ways Vault takes a token; Prometheus's `authorization` sends the second.
	headerVaultToken = "X-Vault-Token"
	headerBearer     = "Authorization"

	metricsContentType = "text/plain; version=0.0.4; charset=utf-8"
	// prometheusAccept is the Accept header of a Prometheus scrape: it prefers OpenMetrics and
	// takes the classic text format.
	prometheusAccept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)

// metricSamples is one parsed scrape: each series' value by name{label="value",...} (labels in
// name order; a histogram as name_count and name_sum), and each family's type.
type metricSamples struct {
	values map[string]float64
	types  map[string]string
}

// value is the series' value; 0 when it is absent (a counter not yet counted).
func (m *metricSamples) value(key string) float64 { return m.values[key] }

func (m *metricSamples) has(key string) bool {
	_, ok := m.values[key]
	return ok
}

// matching lists the series whose key starts with prefix, for messages.
func (m *metricSamples) matching(prefix string) []string {
	var out []string
	for k, v := range m.values {
		if strings.HasPrefix(k, prefix) {
			out = append(out, fmt.Sprintf("%s %v", k, v))
		}
	}
	sort.Strings(out)
	return out
}

// metricsScraper is a client whose token may read <mount>/metrics and nothing else.
func metricsScraper(t *testing.T, mount string) *api.Client {
	t.Helper()
	return newClientWithPolicy(t, "e2e-metrics-"+randSuffix(), fmt.Sprintf(`path "%s/metrics" { capabilities = ["read"] }`, mount))
}

// metricsGet sends GET /v1/<mount>/metrics as a Prometheus scrape, with the token (if any) in
// the header named, and returns the status, content type and body.
func metricsGet(t *testing.T, mount, token, header string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, env.vaultAddr+"/v1/"+mount+"/metrics", nil)
	must(t, err)
	req.Header.Set("Accept", prometheusAccept)
	switch header {
	case headerVaultToken:
		req.Header.Set(headerVaultToken, token)
	case headerBearer:
		req.Header.Set(headerBearer, "Bearer "+token)
	default:
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("scraping %s/metrics: %v", mount, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scraping %s/metrics: reading the body: %v", mount, err)
	}
	recordMetrics(mount+"/metrics", body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

// scrapeMetrics scrapes <mount>/metrics, checks the answer is the Prometheus text format, and
// parses it.
func scrapeMetrics(t *testing.T, mount, token, header string) *metricSamples {
	t.Helper()
	code, ctype, body := metricsGet(t, mount, token, header)
	if code != http.StatusOK {
		t.Fatalf("scraping %s/metrics with %s: HTTP %d: %s", mount, header, code, body)
	}
	if ctype != metricsContentType {
		t.Errorf("scraping %s/metrics: Content-Type %q, want %q", mount, ctype, metricsContentType)
	}
	return parseMetrics(t, body)
}

func parseMetrics(t *testing.T, body []byte) *metricSamples {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the metrics are not the Prometheus text format: %v\n%s", err, body)
	}
	m := &metricSamples{values: map[string]float64{}, types: map[string]string{}}
	set := func(key string, v float64) {
		if m.has(key) {
			t.Errorf("series %s appears twice", key)
		}
		m.values[key] = v
	}
	for name, f := range families {
		if f.GetHelp() == "" {
			t.Errorf("metric %s has no HELP", name)
		}
		m.types[name] = f.GetType().String()
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			suffix := ""
			if len(labels) > 0 {
				suffix = "{" + strings.Join(labels, ",") + "}"
			}
			switch m.types[name] {
			case "COUNTER":
				set(name+suffix, s.GetCounter().GetValue())
			case "GAUGE":
				set(name+suffix, s.GetGauge().GetValue())
			case "HISTOGRAM":
				set(name+"_count"+suffix, float64(s.GetHistogram().GetSampleCount()))
				set(name+"_sum"+suffix, s.GetHistogram().GetSampleSum())
			default:
				t.Errorf("metric %s has type %s", name, m.types[name])
			}
		}
	}
	return m
}

// metricsFamilies are the families <mount>/metrics answers, with their types.
var metricsFamilies = map[string]string{
	"vault_oauth_grants_total":                  "COUNTER",
	"vault_oauth_grant_duration_seconds":        "HISTOGRAM",
	"vault_oauth_grant_failures_total":          "COUNTER",
	"vault_oauth_creds_reads_total":             "COUNTER",
	"vault_oauth_token_seconds_left":            "GAUGE",
	"vault_oauth_retry_after_seconds":           "GAUGE",
	"vault_oauth_refresh_queue_roles":           "GAUGE",
	"vault_oauth_refresh_lag_seconds":           "GAUGE",
	"vault_oauth_refresh_tick_duration_seconds": "HISTOGRAM",
	"vault_oauth_roles":                         "GAUGE",
}

// metricsCase is a failure kind and the fault that causes it.
type metricsCase struct {
	scenario faultproxy.Scenario
	kind     string
}

var metricsFailureKinds = []metricsCase{
	{faultproxy.HTML503, "http_503"},
	{faultproxy.InvalidClient, "http_401"},
	{faultproxy.Hang, "timeout"},
	{faultproxy.Refuse, "network"},
	{faultproxy.UntrustedTLS, "tls"},
	{faultproxy.Garbage, "invalid_response"},
}

// key formats a series key: name{label="value",...}, labels given in name order.
func key(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var parts []string
	for i := 0; i+1 < len(labels); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

func readsKey(role, result string) string {
	return key("vault_oauth_creds_reads_total", "result", result, "role", role)
}

func grantsKey(role, outcome string) string {
	return key("vault_oauth_grants_total", "grant_type", "client_credentials", "outcome", outcome, "role", role)
}

func failuresKey(role, kind string) string {
	return key("vault_oauth_grant_failures_total", "kind", kind, "role", role)
}

const grantCountKey = `vault_oauth_grant_duration_seconds_count{grant_type="client_credentials"}`

// wantValues checks series values after a step.
func wantValues(t *testing.T, step string, m *metricSamples, want map[string]float64) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got := m.value(k); got != want[k] {
			t.Errorf("after %s: %s = %v, want %v", step, k, got, want[k])
		}
	}
}

// wantBetween checks a gauge lies in [lo, hi].
func wantBetween(t *testing.T, step string, m *metricSamples, k string, lo, hi float64) {
	t.Helper()
	if !m.has(k) {
		t.Errorf("after %s: no series %s (%v)", step, k, m.matching(strings.SplitN(k, "{", 2)[0]))
		return
	}
	if got := m.value(k); got < lo || got > hi {
		t.Errorf("after %s: %s = %v, want %v–%v", step, k, got, lo, hi)
	}
}

// testMetrics (run by TestRefresh, beside its long subtests): <mount>/metrics through the real
// Vault, scraped with a token of a policy that allows only it, in either header Vault takes, in
// the Prometheus text format; refused without such a token; its values change as they should
// after a first read and its grant, cache hits, a provider fault with a token cached (stale) and
// without (error), each failure kind, a Retry-After, a lease=false token served below its
// threshold, and with role labels switched off.
func testMetrics(t *testing.T) {
	pm := newProxiedMount(t, "metrics", faultTimeout, nil)
	c, mount := pm.c, pm.path
	scraper := metricsScraper(t, mount)
	scrape := func(header string) *metricSamples { return scrapeMetrics(t, mount, scraper.Token(), header) }

	// Refused: no token, a token whose policy does not cover the path, a token Vault never issued.
	other := newClientWithPolicy(t, "e2e-metrics-creds-"+randSuffix(), fmt.Sprintf(`path "%s/creds/*" { capabilities = ["read"] }`, mount))
	for _, r := range []struct{ what, token, header string }{
		{"no token", "", ""},
		{"a token without the path in its policy, as X-Vault-Token", other.Token(), headerVaultToken},
		{"a token without the path in its policy, as a Bearer token", other.Token(), headerBearer},
		{"an unknown token", "hvs.unknown" + randSuffix(), headerBearer},
	} {
		if code, _, body := metricsGet(t, mount, r.token, r.header); code != http.StatusForbidden {
			t.Errorf("a scrape with %s: HTTP %d, want 403: %s", r.what, code, body)
		}
	}

	var secrets []string
	roleWithClient := func(name string, ttl int, data map[string]any) {
		id, secret := registerClient(t, map[string]any{"access_token_ttl": ttl})
		secrets = append(secrets, secret)
		data["client_id"], data["client_secret"] = id, secret
		mustWrite(t, c, mount+"/roles/"+name, data)
	}
	secrets = append(secrets, pm.clientSecret)

	s0 := scrape(headerVaultToken)
	wantValues(t, "mounting", s0, map[string]float64{
		"vault_oauth_roles": 0, "vault_oauth_refresh_queue_roles": 0, "vault_oauth_refresh_lag_seconds": 0, grantCountKey: 0,
	})

	// A first read: a miss, and one successful grant, timed. (Each role is read as soon as it is
	// written: a role without a token is due at the refresher's next tick, which would obtain it.)
	mustWrite(t, c, mount+"/roles/app", map[string]any{"scopes": "read"})
	appToken := str(mustRead(t, c, mount+"/creds/app").Data["access_token"])
	secrets = append(secrets, appToken)
	s1 := scrape(headerBearer)
	wantValues(t, "a first read", s1, map[string]float64{
		readsKey("app", "miss"): 1, readsKey("app", "hit"): 0, grantsKey("app", "success"): 1, grantsKey("app", "failure"): 0,
		grantCountKey: 1, `vault_oauth_retry_after_seconds{role="app"}`: 0, "vault_oauth_roles": 1, "vault_oauth_refresh_queue_roles": 1,
	})
	wantBetween(t, "a first read", s1, `vault_oauth_grant_duration_seconds_sum{grant_type="client_credentials"}`, 1e-6, faultTimeout)
	wantBetween(t, "a first read", s1, `vault_oauth_token_seconds_left{role="app"}`, editsTokenTTL-10, editsTokenTTL)

	// Cached reads: hits, and nothing asked of the provider.
	const hits = 5
	for range hits {
		mustRead(t, c, mount+"/creds/app")
	}
	s2 := scrape(headerVaultToken)
	wantValues(t, "cached reads", s2, map[string]float64{
		readsKey("app", "hit"): hits, readsKey("app", "miss"): 1, grantsKey("app", "success"): 1, grantCountKey: s1.value(grantCountKey),
	})

	// The provider fails (503) with a token cached: a forced read is served it (stale).
	pm.setScenario(t, faultproxy.HTML503)
	s, code, msg := vaultRead(t, c, mount+"/creds/app", forcedRead)
	pm.setScenario(t, faultproxy.None)
	if code != http.StatusOK || s == nil || str(s.Data["access_token"]) != appToken || !containsText(s.Warnings, "serving the cached token") {
		t.Fatalf("a forced read during a 503 with a token cached: HTTP %d %q; want the cached token with a warning", code, msg)
	}
	s3 := scrape(headerBearer)
	wantValues(t, "a 503 with a token cached", s3, map[string]float64{
		readsKey("app", "stale"): 1, readsKey("app", "hit"): hits, readsKey("app", "miss"): 1,
		grantsKey("app", "failure"): 1, grantsKey("app", "success"): 1, failuresKey("app", "http_503"): 1,
		grantCountKey: s2.value(grantCountKey) + 1,
	})

	// Each failure kind, on a role with no token: the read fails (error).
	faulted := map[string]float64{}
	for _, fc := range metricsFailureKinds {
		role := "kind-" + strings.ReplaceAll(fc.kind, "_", "-")
		mustWrite(t, c, mount+"/roles/"+role, map[string]any{"scopes": "read"})
		t.Cleanup(func() { vaultDelete(t, c, mount+"/roles/"+role) })
		pm.setScenario(t, fc.scenario)
		_, code, msg := vaultRead(t, c, mount+"/creds/"+role, nil)
		pm.setScenario(t, faultproxy.None)
		if code/100 != 4 && code/100 != 5 {
			t.Errorf("a read of %s under %s succeeded: HTTP %d", role, fc.scenario, code)
		}
		t.Logf("%s: HTTP %d %q", fc.scenario, code, msg)
		faulted[readsKey(role, "error")] = 1
		faulted[grantsKey(role, "failure")] = 1
		faulted[grantsKey(role, "success")] = 0
		faulted[failuresKey(role, fc.kind)] = 1
		faulted[key("vault_oauth_token_seconds_left", "role", role)] = 0
	}
	faulted["vault_oauth_roles"] = float64(1 + len(metricsFailureKinds))
	faulted["vault_oauth_refresh_queue_roles"] = float64(1 + len(metricsFailureKinds))
	faulted[grantCountKey] = s3.value(grantCountKey) + float64(len(metricsFailureKinds))
	s4 := scrape(headerVaultToken)
	wantValues(t, "each failure kind with no token cached", s4, faulted)
	for _, fc := range metricsFailureKinds {
		// The refresher must not retry these roles while the steps below count.
		role := "kind-" + strings.ReplaceAll(fc.kind, "_", "-")
		if code, msg := vaultDelete(t, c, mount+"/roles/"+role); code/100 != 2 {
			t.Errorf("deleting %s: HTTP %d: %s", role, code, msg)
		}
	}

	// Retry-After with a token cached: stale, and the time it holds the role back.
	roleWithClient("b", 1000, map[string]any{"scopes": "read"})
	bToken := str(mustRead(t, c, mount+"/creds/b").Data["access_token"])
	secrets = append(secrets, bToken)
	pm.setScenario(t, faultproxy.RetryAfterSeconds)
	s, code, msg = vaultRead(t, c, mount+"/creds/b", forcedRead)
	pm.setScenario(t, faultproxy.None)
	if code != http.StatusOK || s == nil || str(s.Data["access_token"]) != bToken {
		t.Fatalf("a forced read during a 429 with a token cached: HTTP %d %q; want the cached token", code, msg)
	}
	s5 := scrape(headerBearer)
	wantValues(t, "a 429 with Retry-After", s5, map[string]float64{
		readsKey("b", "miss"): 1, readsKey("b", "stale"): 1, failuresKey("b", "http_429"): 1, grantsKey("b", "success"): 1,
		`vault_oauth_retry_after_seconds{role="app"}`: 0, "vault_oauth_roles": 2,
	})
	wantBetween(t, "a 429 with Retry-After", s5, `vault_oauth_retry_after_seconds{role="b"}`, faultproxy.RetryAfterSecondsValue-5, faultproxy.RetryAfterSecondsValue)
	wantBetween(t, "a 429 with Retry-After", s5, `vault_oauth_token_seconds_left{role="b"}`, 1000-30, 1000)

	secrets = append(secrets, checkLeaselessStale(t, pm, roleWithClient, scrape)...)

	// Role labels off: the role label is empty; the per-role gauges become one series each, the
	// least time left (b's) and the longest Retry-After (b's).
	before := scrape(headerVaultToken)
	switched := time.Now()
	mustWrite(t, c, mount+"/config", map[string]any{"metrics_role_labels": false})
	if tok := str(mustRead(t, c, mount+"/creds/app").Data["access_token"]); tok != appToken {
		t.Error("turning role labels off replaced the cached token")
	}
	s7 := scrape(headerBearer)
	elapsed := time.Since(switched).Seconds() + 1
	wantValues(t, "role labels off and a read", s7, map[string]float64{
		readsKey("", "hit"): 1, readsKey("", "miss"): 0, readsKey("app", "hit"): before.value(readsKey("app", "hit")),
	})
	for _, gauge := range []string{"vault_oauth_token_seconds_left", "vault_oauth_retry_after_seconds"} {
		if got := s7.matching(gauge + "{"); len(got) != 1 || !strings.HasPrefix(got[0], gauge+`{role=""} `) {
			t.Errorf("with role labels off, %s is %v; want one series, role=\"\"", gauge, got)
		}
	}
	leastLeft := min(before.value(`vault_oauth_token_seconds_left{role="app"}`), before.value(`vault_oauth_token_seconds_left{role="b"}`))
	wantBetween(t, "role labels off", s7, `vault_oauth_token_seconds_left{role=""}`, leastLeft-elapsed-1, leastLeft)
	mostRetry := max(before.value(`vault_oauth_retry_after_seconds{role="app"}`), before.value(`vault_oauth_retry_after_seconds{role="b"}`))
	wantBetween(t, "role labels off", s7, `vault_oauth_retry_after_seconds{role=""}`, mostRetry-elapsed-1, mostRetry)

	for name, typ := range metricsFamilies {
		if s7.types[name] != typ {
			t.Errorf("metric %s: type %q, want %s", name, s7.types[name], typ)
		}
	}
	if extra := len(s7.types) - len(metricsFamilies); extra != 0 {
		t.Errorf("%d metric families beyond the documented ones: %v", extra, s7.types)
	}
	checkNoSecretIn(t, scrapedBodies(mount), secrets)
	t.Logf("grants timed: %v in %.3fs; reads of app: hit %v, miss %v, stale %v",
		s7.value(grantCountKey), s7.value(`vault_oauth_grant_duration_seconds_sum{grant_type="client_credentials"}`),
		s7.value(readsKey("app", "hit")), s7.value(readsKey("app", "miss")), s7.value(readsKey("app", "stale")))
}

// checkLeaselessStale: a lease=false token below its refresh threshold while the provider fails
// is served (stale) with a ttl of at most 10 s, so that the Agent comes back soon. Its client's
// tokens live 20 s and its threshold is 90% of that, so the token falls below it 2 s after the
// grant. It returns the secrets it used.
func checkLeaselessStale(t *testing.T, pm *proxiedMount, roleWithClient func(string, int, map[string]any), scrape func(string) *metricSamples) []string {
	t.Helper()
	const ttl, threshold = 20, 18
	c, creds := pm.c, pm.path+"/creds/short"
	roleWithClient("short", ttl, map[string]any{"scopes": "read", "lease": false, "refresh_fraction": 0.9})
	t.Cleanup(func() { vaultDelete(t, c, pm.path+"/roles/short") })
	s := mustRead(t, c, creds)
	token := str(s.Data["access_token"])
	// The plugin's own count of the token's life left (whole seconds, rounded down) tells when it
	// is below the threshold; a creds read would replace it.
	waitFor(t, "the token is below its refresh threshold", 10*time.Second, func() bool {
		return scrape(headerVaultToken).value(`vault_oauth_token_seconds_left{role="short"}`) < threshold
	})

	pm.setScenario(t, faultproxy.HTML503)
	s, code, msg := vaultRead(t, c, creds, nil)
	pm.setScenario(t, faultproxy.None)
	if code != http.StatusOK || s == nil || str(s.Data["access_token"]) != token || !containsText(s.Warnings, "serving the cached token") {
		t.Fatalf("a lease=false read below the threshold during a 503: HTTP %d %q; want the cached token with a warning", code, msg)
	}
	if s.LeaseID != "" {
		t.Errorf("a lease=false stale read answered a lease %q", s.LeaseID)
	}
	left := num(t, s.Data["expires_in"], "expires_in")
	ttlNum, ok := s.Data["ttl"].(json.Number)
	if !ok {
		t.Fatalf("ttl %v (%T) is not a JSON number", s.Data["ttl"], s.Data["ttl"])
	}
	if got := num(t, ttlNum, "ttl"); got < 1 || got > min(left, 10) {
		t.Errorf("a stale lease=false answer with %ds left has ttl %d; want 1–min(left, 10)", left, got)
	}
	t.Logf("stale lease=false answer: %ds left, ttl %v, rotation_period %v", left, s.Data["ttl"], s.Data["rotation_period"])
	m := scrape(headerVaultToken)
	wantValues(t, "a lease=false token below its threshold during a 503", m, map[string]float64{
		readsKey("short", "miss"): 1, readsKey("short", "stale"): 1, failuresKey("short", "http_503"): 1,
	})
	if code, msg := vaultDelete(t, c, pm.path+"/roles/short"); code/100 != 2 {
		t.Errorf("deleting short: HTTP %d: %s", code, msg)
	}
	return []string{token}
}

// scrapedBodies are the metrics bodies recorded for mount so far.
func scrapedBodies(mount string) []string {
	leaks.mu.Lock()
	defer leaks.mu.Unlock()
	var out []string
	for _, s := range leaks.texts {
		if s.name == metricsSource+mount+"/metrics" {
			out = append(out, string(s.data))
		}
	}
	return out
}
