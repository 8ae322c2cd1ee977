package oauth

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func scrape(t *testing.T, b *backend, s logical.Storage) string {
	t.Helper()
	resp := mustSucceed(t, request(t, b, s, logical.ReadOperation, "metrics", nil))
	if ct := resp.Data[logical.HTTPContentType]; ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("content type %v", ct)
	}
	return string(resp.Data[logical.HTTPRawBody].([]byte))
}

func mustContain(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, l) {
			t.Errorf("metrics lack %q", l)
		}
	}
}

// Metrics follow reads, grants and failures, and never show a secret.
func TestMetricsFollowReadsGrantsAndFailures(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	at := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	readCreds(t, b, s, "app", nil)
	clockOf(b).Shift(40 * time.Minute)
	p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusBadGateway)
		return true
	}
	readCreds(t, b, s, "app", nil)

	text := scrape(t, b, s)
	mustContain(t, text,
		`vault_oauth_grants_total{grant_type="client_credentials",outcome="success",role="app"} 1`,
		`vault_oauth_grants_total{grant_type="client_credentials",outcome="failure",role="app"} 1`,
		`vault_oauth_grant_failures_total{kind="http_502",role="app"} 1`,
		`vault_oauth_creds_reads_total{result="hit",role="app"} 1`,
		`vault_oauth_creds_reads_total{result="miss",role="app"} 1`,
		`vault_oauth_creds_reads_total{result="stale",role="app"} 1`,
		`vault_oauth_grant_duration_seconds_count{grant_type="client_credentials"} 2`,
		`vault_oauth_token_seconds_left{role="app"} 11`,
		`vault_oauth_roles 1`,
	)
	for _, secret := range []string{at, testClientSecret} {
		if strings.Contains(text, secret) {
			t.Fatal("the metrics show a secret")
		}
	}
}

// With role labels off, no role name appears and the per-role gauges become the fleet's worst.
func TestMetricsWithoutRoleLabels(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"metrics_role_labels": false}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/second", nil))
	readCreds(t, b, s, "app", nil)

	text := scrape(t, b, s)
	if strings.Contains(text, `role="app"`) || strings.Contains(text, `role="second"`) {
		t.Fatal("role names appear although metrics_role_labels=false")
	}
	mustContain(t, text, `vault_oauth_token_seconds_left{role=""} 0`, `vault_oauth_roles 2`,
		`vault_oauth_creds_reads_total{result="miss",role=""} 1`)
}

// The refresher's queue and lag are measured.
func TestMetricsShowRefresherQueue(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", nil)
	initialize(t, e.b, e.s)
	text := scrape(t, e.b, e.s)
	mustContain(t, text, "vault_oauth_refresh_queue_roles 1", "vault_oauth_refresh_lag_seconds 0")
	ticks := metricValue(t, text, "vault_oauth_refresh_tick_duration_seconds_count")
	e.tick(t)
	if after := metricValue(t, scrape(t, e.b, e.s), "vault_oauth_refresh_tick_duration_seconds_count"); after != ticks+1 {
		t.Fatalf("a tick moved the tick count from %v to %v", ticks, after)
	}
}

// metricValue is the value of the sample named exactly name (with its labels) in text.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s", name)
	return 0
}

// A deleted role's series go with it.
func TestMetricsForgetDeletedRoles(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil)
	mustContain(t, scrape(t, b, s), `role="app"`)
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/app", nil))
	if strings.Contains(scrape(t, b, s), `role="app"`) {
		t.Fatal("the deleted role's metrics remain")
	}
}
