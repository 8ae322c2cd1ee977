package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// scrapeResult is what reading <mount>/metrics costs on the refresh phase's mount.
type scrapeResult struct {
	mount   string
	roles   int
	reread  time.Duration // every role read once more, after the switch to 1-hour tokens
	grants  int64         // provider requests meanwhile
	rows    []scrapeRow
	rssKiB  int64 // plugin process RSS after the warm scrapes with role labels (0: unknown)
	rssNote string
	probe   []byte // a role's label, to check that labels are on or off as configured
}

// scrapeRow is one kind of scrape: the first after a plugin reload, or warm ones.
type scrapeRow struct {
	what   string
	labels bool
	reload time.Duration // sys/plugins/reload/backend before a first scrape (it runs the plugin's initialize)
	lat    latencies
	bytes  int // body of the last scrape
	series int // sample lines of the last scrape
}

// scrapeCost measures scrapes of o.mount/metrics with the roles already there (the refresh
// phase's). So that no refresh runs meanwhile, it first points the mount at a client with
// 1-hour tokens and reads every role once (each gets a new token, and a grant and a read are
// counted with its name). Then, with role labels: warm scrapes; with metrics_role_labels=false:
// a plugin reload (dropping the counters kept per role name), the first scrape after it and warm
// ones; and with role labels again, a reload and the first scrape.
func scrapeCost(ctx context.Context, admin *api.Client, p *provider, o fleetOptions, scrapes int, logf func(string, ...any)) (*scrapeResult, error) {
	res := &scrapeResult{mount: o.mount}
	list, err := admin.Logical().ListWithContext(ctx, o.mount+"/roles")
	if err != nil || list == nil {
		return nil, fmt.Errorf("listing %s/roles (the metrics phase scrapes the refresh phase's roles): %v", o.mount, err)
	}
	keys, _ := list.Data["keys"].([]any)
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		if s, ok := k.(string); ok {
			names = append(names, s)
		}
	}
	res.roles = len(names)
	if res.roles == 0 {
		return nil, fmt.Errorf("%s has no roles: run the refresh phase first", o.mount)
	}

	id, secret, err := p.register(ctx, time.Hour)
	if err != nil {
		return nil, err
	}
	if err := writeConfig(ctx, admin, o.mount, map[string]any{"issuer": p.issuer, "client_id": id, "client_secret": secret}); err != nil {
		return nil, err
	}
	if err := p.resetStats(ctx); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := forEach(ctx, len(names), o.workers, func(ctx context.Context, i int) error {
		return readPath(admin, o.mount+"/creds/"+names[i], "access_token")(ctx)
	}); err != nil {
		return nil, fmt.Errorf("reading every role with 1-hour tokens: %w", err)
	}
	res.reread = time.Since(t0)
	st, err := waitQuiet(ctx, p, 3*time.Second, time.Now().Add(o.timeout))
	if err != nil {
		return nil, err
	}
	res.grants = st.TokenRequests
	logf("metrics: %d roles read with 1-hour tokens in %s (%d grants); scraping", res.roles, res.reread.Round(time.Millisecond), res.grants)

	res.probe = []byte(`role="` + names[0] + `"`)
	if err := res.scrapeRow(ctx, admin, "warm", true, scrapes); err != nil {
		return nil, err
	}
	if o.vaultPID != 0 {
		if pid, err := pluginPID(o.vaultPID, o.pluginBin); err != nil {
			res.rssNote = err.Error()
		} else if m, err := readMem(pid); err != nil {
			res.rssNote = err.Error()
		} else {
			res.rssKiB = m.rssKiB
		}
	}
	for _, labels := range []bool{false, true} {
		if err := writeConfig(ctx, admin, o.mount, map[string]any{"metrics_role_labels": labels}); err != nil {
			return nil, err
		}
		t := time.Now()
		if _, err := admin.Sys().ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{o.mount}}); err != nil {
			return nil, fmt.Errorf("reloading %s: %w", o.mount, err)
		}
		reload := time.Since(t)
		if err := res.scrapeRow(ctx, admin, "first after a plugin reload", labels, 1); err != nil {
			return nil, err
		}
		res.rows[len(res.rows)-1].reload = reload
		if !labels {
			if err := res.scrapeRow(ctx, admin, "warm", false, scrapes); err != nil {
				return nil, err
			}
		}
	}
	// Measured: warm with labels, first and warm without, first with. Shown: with labels (first,
	// warm), then without (first, warm).
	r := res.rows
	res.rows = []scrapeRow{r[3], r[0], r[1], r[2]}
	return res, nil
}

// scrapeRow scrapes n times in a row and appends the row.
func (r *scrapeResult) scrapeRow(ctx context.Context, admin *api.Client, what string, labels bool, n int) error {
	row := scrapeRow{what: what, labels: labels}
	start := time.Now()
	for range n {
		t0 := time.Now()
		body, err := scrapeOnce(ctx, admin, r.mount)
		if err != nil {
			return err
		}
		row.lat.ok = append(row.lat.ok, time.Since(t0))
		row.bytes, row.series = len(body), sampleLines(body)
		if named := bytes.Contains(body, r.probe); named != labels {
			return fmt.Errorf("metrics_role_labels=%t, but a role name in the body: %t", labels, named)
		}
	}
	row.lat.elapsed = time.Since(start)
	r.rows = append(r.rows, row)
	return nil
}

// scrapeOnce reads mount/metrics as Prometheus would, with a Vault token, and returns the body.
func scrapeOnce(ctx context.Context, admin *api.Client, mount string) ([]byte, error) {
	resp, err := admin.Logical().ReadRawWithContext(ctx, mount+"/metrics")
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/metrics: %w", mount, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		return nil, fmt.Errorf("reading %s/metrics: status %d, content type %q", mount, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return body, nil
}

// sampleLines counts the lines of a text exposition that are samples (not comments).
func sampleLines(body []byte) int {
	n := 0
	for line := range bytes.Lines(body) {
		if len(bytes.TrimSpace(line)) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}

func writeConfig(ctx context.Context, admin *api.Client, mount string, data map[string]any) error {
	if _, err := admin.Logical().WriteWithContext(ctx, mount+"/config", data); err != nil {
		return fmt.Errorf("writing %s/config: %w", mount, err)
	}
	return nil
}

func (r *scrapeResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "### Metrics: scrapes of `%s/metrics` with %d roles\n\n", r.mount, r.roles)
	fmt.Fprintf(b, "Each role has a token. First the mount was pointed at a client with 1-hour tokens and every role read once (%s, %d grants), so that no refresh ran during the scrapes and each role had a grant and a read counted under its name. ",
		r.reread.Round(time.Millisecond), r.grants)
	b.WriteString("Scrapes are sequential reads with a Vault token, timed by the client; the first after a plugin reload (`sys/plugins/reload/backend`, which also runs the plugin's initialize: it loads every role and token to plan the refresh queue) has no counters yet, since they live in memory. ")
	b.WriteString("Warm scrapes without labels follow a reload with `metrics_role_labels=false`, so the counters kept per role name before are gone.\n\n")
	b.WriteString("| scrape | role labels | scrapes | p50 | max | bytes per scrape | samples per scrape | reload before it |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range r.rows {
		labels, reload := "no", ""
		if row.labels {
			labels = "yes"
		}
		if row.reload > 0 {
			reload = row.reload.Round(time.Millisecond).String()
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s | %d | %s |\n", row.what, labels, len(row.lat.ok),
			ms(row.lat.percentile(0.5)), ms(row.lat.percentile(1)), kib(row.bytes), row.series, reload)
	}
	b.WriteString("\n")
	if r.rssKiB > 0 {
		fmt.Fprintf(b, "- Plugin process RSS after the warm scrapes with role labels: %s.\n", mib(r.rssKiB))
	} else if r.rssNote != "" {
		fmt.Fprintf(b, "- Plugin process RSS unknown: %s.\n", r.rssNote)
	}
	b.WriteString("\n")
}

func kib(n int) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}
