package oauth

import (
	"bytes"
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// Results of a creds read, as counted.
const (
	readHit   = "hit"   // answered from the cache
	readMiss  = "miss"  // answered with a token obtained for it
	readStale = "stale" // the grant failed; answered with the still-valid cached token
	readError = "error" // no token to answer with
)

// metrics is what the plugin counts and measures, served at <mount>/metrics in the Prometheus
// text format. Each backend has its own registry: a mount's metrics are its own. Labels carry
// role names, grant types and failure kinds, never a secret.
type metrics struct {
	registry *prometheus.Registry

	grants       *prometheus.CounterVec
	grantSeconds *prometheus.HistogramVec
	failures     *prometheus.CounterVec
	reads        *prometheus.CounterVec
	tickSeconds  prometheus.Histogram

	// Set from the roles and the refresh queue at each scrape; scrape serialises that.
	scrape      sync.Mutex
	secondsLeft *prometheus.GaugeVec
	retryAfter  *prometheus.GaugeVec
	queueRoles  prometheus.Gauge
	refreshLag  prometheus.Gauge
	rolesTotal  prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vault_oauth_grants_total", Help: "Token requests to the provider, by role, grant type and outcome (success, failure).",
		}, []string{"role", "grant_type", "outcome"}),
		grantSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vault_oauth_grant_duration_seconds", Help: "Time from sending a token request to its answer, by grant type.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"grant_type"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vault_oauth_grant_failures_total", Help: "Failed token requests by role and kind: http_<status>, timeout, tls, network, invalid_response, other.",
		}, []string{"role", "kind"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vault_oauth_creds_reads_total", Help: "creds reads (and exchange/ requests) by role and result: hit (cache), miss (new token), stale (cached token served while the provider fails), error.",
		}, []string{"role", "result"}),
		tickSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vault_oauth_refresh_tick_duration_seconds", Help: "Duration of the refresher's periodic runs.",
			Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 5, 15, 30, 60, 120},
		}),
		secondsLeft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vault_oauth_token_seconds_left", Help: "Seconds the role's cached token has left (0: none; no series for roles that never hold one). Without role labels: the least of all roles.",
		}, []string{"role"}),
		retryAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vault_oauth_retry_after_seconds", Help: "Seconds the provider's Retry-After still holds the role back (0: none). Without role labels: the most of all roles.",
		}, []string{"role"}),
		queueRoles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vault_oauth_refresh_queue_roles", Help: "Roles in the refresher's queue (0 on a node that does not refresh).",
		}),
		refreshLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vault_oauth_refresh_lag_seconds", Help: "How long the most overdue role has been due for the refresher (0: none is overdue).",
		}),
		rolesTotal: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vault_oauth_roles", Help: "Roles of the mount.",
		}),
	}
	m.registry.MustRegister(m.grants, m.grantSeconds, m.failures, m.reads, m.tickSeconds,
		m.secondsLeft, m.retryAfter, m.queueRoles, m.refreshLag, m.rolesTotal)
	return m
}

// roleLabel is the role's name on its metrics, or "" where the config turns role labels off.
func roleLabel(name string, cfg *configEntry) string {
	if cfg != nil && !boolOr(cfg.MetricsRoleLabels, true) {
		return ""
	}
	return name
}

// observeGrant counts one token request and how long it took.
func (m *metrics) observeGrant(role, grantType string, took time.Duration, err error) {
	m.grantSeconds.WithLabelValues(grantType).Observe(took.Seconds())
	if err == nil {
		m.grants.WithLabelValues(role, grantType, "success").Inc()
		return
	}
	m.grants.WithLabelValues(role, grantType, "failure").Inc()
	kind := oauthclient.KindOther
	if oe := (*oauthclient.Error)(nil); errors.As(err, &oe) {
		kind = oe.Kind()
	}
	m.failures.WithLabelValues(role, kind).Inc()
}

func (m *metrics) observeRead(role, result string) {
	m.reads.WithLabelValues(role, result).Inc()
}

// forgetRole drops a deleted role's series, so that roles coming and going do not pile up.
func (m *metrics) forgetRole(role string) {
	for _, v := range []*prometheus.CounterVec{m.grants, m.failures, m.reads} {
		v.DeletePartialMatch(prometheus.Labels{"role": role})
	}
}

// exposition gathers every metric, the per-role gauges freshly set from storage, as Prometheus
// text.
func (b *backend) exposition(ctx context.Context, s logical.Storage) ([]byte, error) {
	m := b.metrics
	m.scrape.Lock()
	defer m.scrape.Unlock()
	if err := b.setRoleGauges(ctx, s); err != nil {
		return nil, err
	}
	families, err := m.registry.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, metricsFormat)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

var metricsFormat = expfmt.NewFormat(expfmt.TypeTextPlain)

// setRoleGauges sets the gauges read off the roles and the queue. Called under m.scrape.
func (b *backend) setRoleGauges(ctx context.Context, s logical.Storage) error {
	m := b.metrics
	cfg, err := b.config(ctx, s)
	if err != nil {
		return err
	}
	names, err := s.List(ctx, rolePrefix)
	if err != nil {
		return err
	}
	now := b.now()
	m.secondsLeft.Reset()
	m.retryAfter.Reset()
	least, most, gauged := math.Inf(1), 0.0, 0
	for _, name := range names {
		role, tok, _, err := b.roleState(ctx, s, name)
		if err != nil {
			return err
		}
		if role == nil || role.tokenless() != "" {
			// A role that never holds a token of its own would pin the least time left at 0.
			continue
		}
		bd, err := b.binding(ctx, s, name, role, cfg)
		if err != nil {
			return err
		}
		left := tok.servable(bd, now).Seconds()
		retry := 0.0
		if tok != nil && tok.RetryAt.After(now) {
			retry = tok.RetryAt.Sub(now).Seconds()
		}
		if label := roleLabel(name, cfg); label != "" {
			m.secondsLeft.WithLabelValues(label).Set(left)
			m.retryAfter.WithLabelValues(label).Set(retry)
		}
		least, most, gauged = min(least, left), max(most, retry), gauged+1
	}
	if roleLabel("role", cfg) == "" && gauged > 0 {
		m.secondsLeft.WithLabelValues("").Set(least)
		m.retryAfter.WithLabelValues("").Set(most)
	}
	m.rolesTotal.Set(float64(len(names)))
	size, lag := 0, time.Duration(0)
	if q := b.refresher.current(); q != nil {
		var earliest time.Time
		size, earliest = q.stats()
		if !earliest.IsZero() && earliest.Before(now) {
			lag = now.Sub(earliest)
		}
	}
	m.queueRoles.Set(float64(size))
	m.refreshLag.Set(lag.Seconds())
	return nil
}
