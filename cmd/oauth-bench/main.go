// Command oauth-bench load-tests the oauth secrets engine inside a real Vault server against a
// real OAuth 2.0 provider (test/provider), and writes the results as a Markdown table.
//
// It measures five things:
//
//   - reads: N concurrent clients read oauth/creds/<role> (a leased, cached token), the same for
//     a lease=false role (no lease; ttl and rotation_period instead) and a KV-v1 secret of the same
//     size (built in, no lease), alternating in 10-second turns aligned to Vault's telemetry
//     intervals; it reports throughput and p50/p99 latency per read, from sys/metrics the storage
//     writes and lease registrations each read cost Vault, and the leases Vault holds afterwards;
//   - exchange: cached on-behalf-of token exchanges (exchange/<role>) against a KV read of an
//     answer of the same size, alternating as in the read phase;
//   - sign: sign/<role> for an OAuth 1.0a role and a DPoP role (the headers of one outgoing
//     request, issue 14) against the same KV-v1 read, in the same alternating turns;
//   - burst: 1,000 reads at once of a role with no token, and how many grants the provider got;
//   - refresh: 10,000 roles with short-lived tokens, and what one refresh tick of PeriodicFunc
//     costs the provider (total and peak concurrent requests), how long the tick takes, and the
//     plugin process's peak RSS;
//   - metrics: what a scrape of <fleet-mount>/metrics costs with those roles: latency and bytes of
//     the first scrape after a plugin reload and of warm scrapes, with and without per-role labels
//     (config metrics_role_labels).
//
// Provider figures come from the provider's own counters (GET /test/stats). scripts/bench.sh
// starts the servers and runs this; `make bench` runs that.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	vaultAddr, vaultToken string
	providerURL           string
	mount, kvMount        string
	exchangeMount         string
	duration              time.Duration
	concurrency           []int
	burst                 int
	burstDelay            time.Duration
	fleet                 fleetOptions
	phases                string
	scrapes               int
	quietLogs             bool
	out                   string
}

func main() {
	var o options
	flag.StringVar(&o.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address")
	flag.StringVar(&o.vaultToken, "vault-token", os.Getenv("VAULT_TOKEN"), "Vault token with root-like rights (mounts, policies, sys/metrics)")
	flag.StringVar(&o.providerURL, "provider", "", "issuer URL of the test provider (scripts/provider.sh)")
	flag.StringVar(&o.mount, "mount", "oauth", "path of the oauth mount for the read and burst phases")
	flag.StringVar(&o.kvMount, "kv-mount", "kv1", "path of the KV-v1 mount to compare with (enabled if missing)")
	flag.StringVar(&o.exchangeMount, "exchange-mount", "oauth-exchange", "path of the oauth mount for the exchange phase (enabled if missing)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "measured read time per target, in 10 s turns (rounded up)")
	concurrency := flag.String("concurrency", "1,16", "concurrent clients in the read phase; a comma list runs the phase once per level")
	flag.IntVar(&o.burst, "burst", 1000, "concurrent reads of the cold role")
	flag.DurationVar(&o.burstDelay, "burst-delay", 200*time.Millisecond, "provider latency per token request during the burst")
	flag.IntVar(&o.fleet.roles, "roles", 10000, "roles in the refresh phase")
	flag.DurationVar(&o.fleet.ttl, "token-ttl", 120*time.Second, "access-token lifetime of the refresh-phase roles")
	flag.DurationVar(&o.fleet.delay, "refresh-delay", 20*time.Millisecond, "provider latency per token request during the refresh phase")
	flag.IntVar(&o.fleet.workers, "setup-concurrency", 32, "concurrency of role creation, first reads and the status sweep")
	flag.DurationVar(&o.fleet.timeout, "cycle-timeout", 5*time.Minute, "how long to wait for the refresh tick")
	flag.StringVar(&o.fleet.mount, "fleet-mount", "oauth-fleet", "path of the oauth mount for the refresh phase (enabled if missing)")
	flag.StringVar(&o.fleet.vaultLog, "vault-log", "", "Vault server log at trace level (STATE_DIR/vault.log), for tick durations")
	flag.IntVar(&o.fleet.vaultPID, "vault-pid", 0, "PID of the Vault server, whose child the plugin process is")
	flag.StringVar(&o.fleet.pluginBin, "plugin-binary", "vault-plugin-secrets-oauth", "plugin process name")
	flag.StringVar(&o.phases, "phases", "reads,exchange,sign,burst,refresh,metrics", "phases to run, comma-separated (metrics scrapes the roles the refresh phase created)")
	flag.IntVar(&o.scrapes, "scrapes", 10, "warm scrapes per setting in the metrics phase")
	flag.BoolVar(&o.quietLogs, "quiet-logs", true, "set Vault's loggers to info during the read and burst phases (trace for the refresh phase, which needs it)")
	flag.StringVar(&o.out, "out", "bench-load.md", "file the Markdown results are written to")
	flag.Parse()
	err := o.parseConcurrency(*concurrency)
	if err == nil {
		err = o.validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "oauth-bench:", err)
		flag.Usage()
		os.Exit(2)
	}

	if err := runAndReport(o); err != nil {
		fmt.Fprintln(os.Stderr, "oauth-bench:", err)
		os.Exit(1)
	}
}

// runAndReport runs the phases until done or interrupted, and prints and writes what they
// measured.
func runAndReport(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o)
	if rep != nil {
		md := rep.markdown()
		fmt.Print(md)
		if werr := os.WriteFile(o.out, []byte(md), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func (o *options) validate() error {
	switch {
	case o.vaultAddr == "" || o.vaultToken == "":
		return fmt.Errorf("-vault-addr and -vault-token (or VAULT_ADDR and VAULT_TOKEN) are required")
	case o.providerURL == "":
		return fmt.Errorf("-provider is required")
	case o.burst < 1 || o.fleet.roles < 1 || o.fleet.workers < 1 || o.scrapes < 1:
		return fmt.Errorf("-burst, -roles, -setup-concurrency and -scrapes must be positive")
	case o.duration < metricsInterval:
		return fmt.Errorf("-duration must be at least %s", metricsInterval)
	}
	for _, p := range strings.Split(o.phases, ",") {
		switch p {
		case "reads", "exchange", "sign", "burst", "metrics":
		case "refresh":
			if o.fleet.vaultLog == "" || o.fleet.vaultPID == 0 {
				return fmt.Errorf("the refresh phase needs -vault-log and -vault-pid")
			}
		default:
			return fmt.Errorf("unknown phase %q", p)
		}
	}
	return nil
}

func (o *options) parseConcurrency(list string) error {
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-concurrency: %q is not a positive number", f)
		}
		o.concurrency = append(o.concurrency, n)
	}
	return nil
}

func (o *options) has(phase string) bool {
	for _, p := range strings.Split(o.phases, ",") {
		if p == phase {
			return true
		}
	}
	return false
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "oauth-bench: "+format+"\n", args...)
}
