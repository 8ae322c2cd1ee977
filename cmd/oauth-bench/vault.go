package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// newClient is a Vault client for addr and token that keeps up to conns connections open, so
// that concurrent readers reuse connections instead of opening one per request, and that never
// retries: a failed read is counted, not hidden.
func newClient(addr, token string, conns int) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address = addr
	cfg.MaxRetries = 0
	cfg.Timeout = 2 * time.Minute
	tr, ok := cfg.HttpClient.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("unexpected HTTP transport %T", cfg.HttpClient.Transport)
	}
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	return c, nil
}

// readerPolicy lets the load clients read what they measure, and nothing else.
const readerPolicy = `
path "%[1]s/creds/*" { capabilities = ["read"] }
path "%[1]s/roles/*" { capabilities = ["read"] }
path "%[2]s/*"       { capabilities = ["read"] }
`

// readerToken creates a token that reads like an application would: its own policy, not root.
func readerToken(ctx context.Context, admin *api.Client, mount, kvMount string) (string, error) {
	if err := admin.Sys().PutPolicyWithContext(ctx, "oauth-bench-reader", fmt.Sprintf(readerPolicy, mount, kvMount)); err != nil {
		return "", err
	}
	s, err := admin.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies:        []string{"oauth-bench-reader"},
		TTL:             "4h",
		NoDefaultPolicy: true,
		DisplayName:     "oauth-bench",
	})
	if err != nil {
		return "", err
	}
	return s.Auth.ClientToken, nil
}

// ensureMount enables a secrets engine at path unless one is there already.
func ensureMount(ctx context.Context, admin *api.Client, path string, in *api.MountInput) error {
	mounts, err := admin.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return err
	}
	if m, ok := mounts[path+"/"]; ok {
		if m.Type != in.Type {
			return fmt.Errorf("%s/ is a %s mount, not %s", path, m.Type, in.Type)
		}
		return nil
	}
	return admin.Sys().MountWithContext(ctx, path, in)
}

// mountAccessor names the mount in Vault's logs (secrets.<type>.<accessor>).
func mountAccessor(ctx context.Context, admin *api.Client, path string) (string, error) {
	mounts, err := admin.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return "", err
	}
	m, ok := mounts[path+"/"]
	if !ok {
		return "", fmt.Errorf("no mount at %s/", path)
	}
	return m.Accessor, nil
}

// setLogLevel changes the level of every Vault logger at run time (sys/loggers).
func setLogLevel(ctx context.Context, admin *api.Client, level string) error {
	_, err := admin.Logical().WriteWithContext(ctx, "sys/loggers", map[string]any{"level": level})
	return err
}

// countLeases is how many leases Vault holds under prefix (e.g. oauth/creds/hot/).
func countLeases(ctx context.Context, admin *api.Client, prefix string) (int, error) {
	s, err := admin.Logical().ListWithContext(ctx, "sys/leases/lookup/"+prefix)
	if err != nil || s == nil {
		return 0, err
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys), nil
}

// metricSample is one timer of Vault's in-memory telemetry (milliseconds).
type metricSample struct {
	Name  string  `json:"Name"`
	Count int64   `json:"Count"`
	Sum   float64 `json:"Sum"`
	Max   float64 `json:"Max"`
}

// metricInterval is what sys/metrics shows: Vault's last complete 10-second interval.
type metricInterval struct {
	Timestamp string         `json:"Timestamp"`
	Samples   []metricSample `json:"Samples"`
}

// metricsInterval is Vault's telemetry interval length (its in-memory sink is fixed at 10 s).
const metricsInterval = 10 * time.Second

func (m *metricInterval) start() (time.Time, error) {
	return time.Parse("2006-01-02 15:04:05 -0700 MST", m.Timestamp)
}

// sample returns the named timer, zero when it did not fire in the interval.
func (m *metricInterval) sample(name string) metricSample {
	for _, s := range m.Samples {
		if s.Name == name {
			return s
		}
	}
	return metricSample{Name: name}
}

// intervalMetrics fetches the interval that starts at start; Vault shows the last complete one,
// so this is called shortly after start+10s.
func intervalMetrics(ctx context.Context, admin *api.Client, start time.Time) (*metricInterval, error) {
	resp, err := admin.Logical().ReadRawWithContext(ctx, "sys/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m metricInterval
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("decoding sys/metrics: %w", err)
	}
	got, err := m.start()
	if err != nil {
		return nil, fmt.Errorf("sys/metrics timestamp %q: %w", m.Timestamp, err)
	}
	if !got.Equal(start) {
		return nil, fmt.Errorf("sys/metrics shows the interval of %s, not %s", got.Format(time.TimeOnly), start.UTC().Format(time.TimeOnly))
	}
	return &m, nil
}

// routeMetric is the timer Vault keeps for an operation routed to a mount
// ("vault.route.read.oauth-").
func routeMetric(op, mount string) string {
	return "vault.route." + op + "." + strings.ReplaceAll(mount, "/", "-") + "-"
}
