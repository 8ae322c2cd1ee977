package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"
)

// report collects what the phases measured; a phase that did not run leaves its part nil.
type report struct {
	vaultVersion string
	storage      string // Vault's storage backend type
	opts         options
	started      time.Time
	took         time.Duration

	reads        []readLevel
	signs        []signLevel
	credsReads   int // successful creds reads of the leased role, warm-up included
	leasesBefore int
	leasesAfter  int
	// The lease=false role: its successful reads (warm-up included) and Vault's leases under
	// its creds path before and after them (0 and 0 expected).
	noLeaseReads  int
	noLeaseLeases [2]int
	// Revoking the creds leases afterwards: what each read costs Vault later, at lease expiry.
	revoke   time.Duration
	vaultMem [2]memInfo // Vault's memory before and after the read phase (zero without -vault-pid)
	burst    *burstResult
	fleet    *fleetResult
	scrape   *scrapeResult
	exchange *exchangeResult
}

const (
	hotRole     = "bench-hot"     // creds answered as leases (the default)
	noLeaseRole = "bench-nolease" // the same client and scopes, lease=false
	kvPath      = "bench"
)

func run(ctx context.Context, o options) (*report, error) {
	rep := &report{opts: o, started: time.Now()}
	defer func() { rep.took = time.Since(rep.started) }()
	admin, err := newClient(o.vaultAddr, o.vaultToken, o.fleet.workers+4)
	if err != nil {
		return nil, err
	}
	health, err := admin.Sys().HealthWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	rep.vaultVersion = health.Version
	rep.storage = storageType(ctx, admin)
	p, err := newProvider(ctx, o.providerURL)
	if err != nil {
		return nil, err
	}

	if o.has("reads") || o.has("burst") || o.has("sign") {
		if err := configureMount(ctx, admin, p, o.mount); err != nil {
			return rep, err
		}
		if err := ensureMount(ctx, admin, o.kvMount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
			return rep, err
		}
		token, err := readerToken(ctx, admin, o.mount, o.kvMount)
		if err != nil {
			return rep, fmt.Errorf("reader token: %w", err)
		}
		if o.quietLogs {
			if err := setLogLevel(ctx, admin, "info"); err != nil {
				return rep, fmt.Errorf("sys/loggers: %w", err)
			}
		}
		if o.has("reads") {
			if err := rep.runReads(ctx, admin, token); err != nil {
				return rep, err
			}
		}
		if o.has("sign") {
			if err := rep.runSigns(ctx, admin); err != nil {
				return rep, fmt.Errorf("sign: %w", err)
			}
		}
		if o.has("burst") {
			logf("burst: %d concurrent reads of a role without a token", o.burst)
			if rep.burst, err = coldBurst(ctx, admin, p, o.vaultAddr, token, o.mount, o.burst, o.burstDelay); err != nil {
				return rep, fmt.Errorf("burst: %w", err)
			}
		}
	}
	if o.has("exchange") {
		logf("exchange: cached on-behalf-of exchanges against a KV read")
		if err := rep.runExchange(ctx, admin, p); err != nil {
			return rep, fmt.Errorf("exchange: %w", err)
		}
	}
	if o.has("refresh") {
		// Tick durations come from trace lines.
		if err := setLogLevel(ctx, admin, "trace"); err != nil {
			return rep, fmt.Errorf("sys/loggers: %w", err)
		}
		logf("refresh: %d roles with %s tokens", o.fleet.roles, o.fleet.ttl)
		if rep.fleet, err = refreshCycle(ctx, admin, p, o.fleet, logf); err != nil {
			return rep, fmt.Errorf("refresh: %w", err)
		}
	} else if o.quietLogs {
		_ = setLogLevel(ctx, admin, "trace")
	}
	if o.has("metrics") {
		logf("metrics: scrapes of %s/metrics", o.fleet.mount)
		if rep.scrape, err = scrapeCost(ctx, admin, p, o.fleet, o.scrapes, logf); err != nil {
			return rep, fmt.Errorf("metrics: %w", err)
		}
	}
	return rep, nil
}

// storageType is the type of Vault's storage backend, "unknown" when Vault does not say.
func storageType(ctx context.Context, admin *api.Client) string {
	s, err := admin.Logical().ReadWithContext(ctx, "sys/config/state/sanitized")
	if err != nil || s == nil {
		return "unknown"
	}
	storage, _ := s.Data["storage"].(map[string]any)
	if t, ok := storage["type"].(string); ok && t != "" {
		return t
	}
	return "unknown"
}

// configureMount points the mount at the provider with a client of its own whose tokens last
// an hour, so that no token expires during the read phases, and writes the leased role and the
// lease=false role.
func configureMount(ctx context.Context, admin *api.Client, p *provider, mount string) error {
	id, secret, err := p.register(ctx, time.Hour)
	if err != nil {
		return err
	}
	if _, err := admin.Logical().WriteWithContext(ctx, mount+"/config", map[string]any{
		"issuer": p.issuer, "client_id": id, "client_secret": secret,
	}); err != nil {
		return fmt.Errorf("writing %s/config: %w", mount, err)
	}
	for role, lease := range map[string]bool{hotRole: true, noLeaseRole: false} {
		if _, err := admin.Logical().WriteWithContext(ctx, mount+"/roles/"+role, map[string]any{"scopes": "read", "lease": lease}); err != nil {
			return fmt.Errorf("writing role %s: %w", role, err)
		}
	}
	return nil
}

func (rep *report) runReads(ctx context.Context, admin *api.Client, token string) error {
	o := rep.opts
	creds := o.mount + "/creds/" + hotRole
	first, err := admin.Logical().ReadWithContext(ctx, creds)
	if err != nil || first == nil {
		return fmt.Errorf("reading %s: %v", creds, err)
	}
	if err := writeLookalike(ctx, admin, o.kvMount+"/"+kvPath, first.Data); err != nil {
		return err
	}
	noLease := o.mount + "/creds/" + noLeaseRole
	if s, err := admin.Logical().ReadWithContext(ctx, noLease); err != nil || s == nil || s.LeaseID != "" || s.Data["ttl"] == nil {
		return fmt.Errorf("reading %s: want an answer without a lease, with ttl: %v, %v", noLease, err, s)
	}
	leases := o.mount + "/creds/" + hotRole + "/"
	if rep.leasesBefore, err = countLeases(ctx, admin, leases); err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	if rep.noLeaseLeases[0], err = countLeases(ctx, admin, noLease+"/"); err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	rep.vaultMem[0] = vaultMem(o.fleet.vaultPID)
	rounds := int((o.duration + metricsInterval - 1) / metricsInterval)
	for _, clients := range o.concurrency {
		c, err := newClient(o.vaultAddr, token, clients)
		if err != nil {
			return err
		}
		targets := []readTarget{
			{label: "`" + creds + "` (plugin, lease)", mount: o.mount, leased: true, read: readPath(c, creds, "access_token")},
			{label: "`" + noLease + "` (plugin, `lease=false`)", mount: o.mount, read: readPath(c, noLease, "access_token", "ttl", "rotation_period")},
			{label: "`" + o.kvMount + "/" + kvPath + "` (KV v1, built in)", mount: o.kvMount, read: readPath(c, o.kvMount+"/"+kvPath, "access_token")},
		}
		logf("reads: %d clients, %d × %s per target", clients, rounds, metricsInterval)
		results, err := measureReads(ctx, admin, targets, clients, rounds, logf)
		if err != nil {
			return err
		}
		rep.reads = append(rep.reads, readLevel{clients: clients, results: results})
		rep.credsReads += len(results[0].lat.ok) + results[0].warmup
		rep.noLeaseReads += len(results[1].lat.ok) + results[1].warmup
	}
	rep.vaultMem[1] = vaultMem(o.fleet.vaultPID)
	if rep.leasesAfter, err = countLeases(ctx, admin, leases); err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	if rep.noLeaseLeases[1], err = countLeases(ctx, admin, noLease+"/"); err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	// Every lease ends in a revocation, which Vault routes to the plugin: time them all at once.
	logf("revoking %d leases", rep.leasesAfter)
	t0 := time.Now()
	if err := admin.Sys().RevokePrefixWithContext(ctx, leases); err != nil {
		return fmt.Errorf("revoking %s: %w", leases, err)
	}
	rep.revoke = time.Since(t0)
	return nil
}

// readLevel is the read phase at one number of concurrent clients.
type readLevel struct {
	clients int
	results []*readResult // leased creds, lease-less creds, KV
}

// vaultMem is the Vault server's memory, zero when its PID is unknown or unreadable.
func vaultMem(pid int) memInfo {
	if pid == 0 {
		return memInfo{}
	}
	m, err := readMem(pid)
	if err != nil {
		logf("reading Vault's memory: %v", err)
	}
	return m
}

// writeLookalike stores a KV secret with the fields of a creds answer, each value as long as the
// original, with a random stand-in for the access token.
func writeLookalike(ctx context.Context, admin *api.Client, path string, creds map[string]any) error {
	data := make(map[string]any, len(creds))
	for k, v := range creds {
		data[k] = fmt.Sprint(v)
	}
	if at, ok := creds["access_token"].(string); ok {
		data["access_token"] = randomLike(at)
	}
	_, err := admin.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// randomLike is a random string as long as s.
func randomLike(s string) string {
	out := ""
	for len(out) < len(s) {
		out += rand.Text()
	}
	return out[:len(s)]
}
