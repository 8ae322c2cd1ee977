package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// fleetOptions describe the many-roles refresh measurement.
type fleetOptions struct {
	mount     string
	roles     int
	ttl       time.Duration // access-token lifetime the provider gives the roles' client
	delay     time.Duration // provider latency per token request
	workers   int           // concurrency of role creation, population and the status sweep
	timeout   time.Duration // how long to wait for the refresh cycle
	vaultLog  string
	vaultPID  int
	pluginBin string
}

// fleetResult is what one refresh cycle of many roles cost.
type fleetResult struct {
	opts          fleetOptions
	maxConcurrent int64
	create, fill  time.Duration
	fillStats     providerStats // provider requests while roles were created and first read

	// The cycle: the first refresher tick that began after the roles had their tokens and the
	// provider had gone quiet. Nothing else calls the provider meanwhile.
	tick      tickEvent // its finished line; zero when the log showed none
	cycle     providerStats
	firstReq  time.Time // first and last provider request seen (polled every pollEvery)
	lastReq   time.Time
	refreshed int64           // roles whose last_refresh falls inside the cycle
	ticks     []time.Duration // every tick of the mount logged during the phase

	memBefore, memAfter memInfo
	notes               []string
}

const pollEvery = 250 * time.Millisecond

func (f *fleetResult) note(format string, args ...any) {
	f.notes = append(f.notes, fmt.Sprintf(format, args...))
}

// refreshCycle creates o.roles roles on a mount of their own, gives each a token by reading it,
// then measures the next PeriodicFunc tick that refreshes them, from the provider's side.
func refreshCycle(ctx context.Context, admin *api.Client, p *provider, o fleetOptions, logf func(string, ...any)) (*fleetResult, error) {
	res := &fleetResult{opts: o}
	if err := ensureMount(ctx, admin, o.mount, &api.MountInput{Type: "oauth"}); err != nil {
		return nil, err
	}
	accessor, err := mountAccessor(ctx, admin, o.mount)
	if err != nil {
		return nil, err
	}
	ticks := newTickLog(o.vaultLog, accessor)
	if err := ticks.skip(); err != nil {
		return nil, fmt.Errorf("vault log: %w", err)
	}
	id, secret, err := p.register(ctx, o.ttl)
	if err != nil {
		return nil, err
	}
	if _, err := admin.Logical().WriteWithContext(ctx, o.mount+"/config", map[string]any{
		"issuer": p.issuer, "client_id": id, "client_secret": secret,
	}); err != nil {
		return nil, fmt.Errorf("writing %s/config: %w", o.mount, err)
	}
	cfg, err := admin.Logical().ReadWithContext(ctx, o.mount+"/config")
	if err != nil || cfg == nil {
		return nil, fmt.Errorf("reading %s/config: %v", o.mount, err)
	}
	res.maxConcurrent, _ = asInt(cfg.Data["max_concurrent_refreshes"])

	pid, err := pluginPID(o.vaultPID, o.pluginBin)
	if err != nil {
		return nil, err
	}
	if res.memBefore, err = readMem(pid); err != nil {
		return nil, err
	}
	if err := p.setDelay(ctx, o.delay); err != nil {
		return nil, err
	}
	defer func() { _ = p.setDelay(context.WithoutCancel(ctx), 0) }()
	if err := p.resetStats(ctx); err != nil {
		return nil, err
	}

	name := func(i int) string { return fmt.Sprintf("f-%05d", i) }
	t0 := time.Now()
	if err := forEach(ctx, o.roles, o.workers, func(ctx context.Context, i int) error {
		_, err := admin.Logical().WriteWithContext(ctx, o.mount+"/roles/"+name(i), map[string]any{"scopes": "read"})
		return err
	}); err != nil {
		return nil, fmt.Errorf("creating roles: %w", err)
	}
	res.create = time.Since(t0)
	logf("created %d roles in %s", o.roles, res.create.Round(time.Millisecond))
	t1 := time.Now()
	if err := forEach(ctx, o.roles, o.workers, func(ctx context.Context, i int) error {
		return readPath(admin, o.mount+"/creds/"+name(i), "access_token")(ctx)
	}); err != nil {
		return nil, fmt.Errorf("first reads: %w", err)
	}
	res.fill = time.Since(t1)
	logf("read a first token for each role in %s; waiting for the provider to go quiet", res.fill.Round(time.Millisecond))

	deadline := time.Now().Add(o.timeout)
	if res.fillStats, err = waitQuiet(ctx, p, 3*time.Second, deadline); err != nil {
		return nil, err
	}
	before, err := ticks.next()
	if err != nil {
		return nil, err
	}
	res.addTicks(before)
	if err := p.resetStats(ctx); err != nil {
		return nil, err
	}
	quietAt := time.Now()
	logf("provider quiet; waiting for the next refresher tick (up to %s)", time.Until(deadline).Round(time.Second))

	if err := res.watchCycle(ctx, p, ticks, quietAt, deadline); err != nil {
		return nil, err
	}
	if res.memAfter, err = readMem(pid); err != nil {
		return nil, err
	}
	since := res.firstReq
	if !res.tick.at.IsZero() {
		since = res.tick.start()
	}
	if !since.IsZero() {
		if res.refreshed, err = countRefreshed(ctx, admin, o, name, since); err != nil {
			res.note("status sweep failed: %v", err)
		}
	}
	return res, nil
}

// watchCycle follows the provider's counters and Vault's log until the first tick that starts
// after quietAt has finished (or, without tick lines in the log, until the provider received a
// request per role and went quiet again).
func (f *fleetResult) watchCycle(ctx context.Context, p *provider, ticks *tickLog, quietAt, deadline time.Time) error {
	var started time.Time
	var last int64
	var idleSince time.Time
	for {
		if err := sleepUntil(ctx, time.Now().Add(pollEvery)); err != nil {
			return err
		}
		st, err := p.stats(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		if st.TokenRequests > last {
			if f.firstReq.IsZero() {
				f.firstReq = now
			}
			f.lastReq, last, idleSince = now, st.TokenRequests, time.Time{}
		} else if idleSince.IsZero() {
			idleSince = now
		}
		f.cycle = st
		evs, err := ticks.next()
		if err != nil {
			return err
		}
		f.addTicks(evs)
		for _, ev := range evs {
			switch {
			case !ev.finished && started.IsZero() && ev.at.After(quietAt):
				started = ev.at
			case ev.finished && !started.IsZero() && !ev.start().Before(started.Add(-time.Millisecond)):
				f.tick = ev
				// Requests already counted are all of this tick's: wait for the last answers.
				return f.settle(ctx, p)
			}
		}
		noLogLines := started.IsZero() && len(f.ticks) == 0
		if noLogLines && last >= int64(f.opts.roles) && st.InFlight == 0 && !idleSince.IsZero() && now.Sub(idleSince) > 5*time.Second {
			f.note("Vault's log showed no tick of the mount: the cycle is bounded by the provider's first and last request instead")
			return nil
		}
		if now.After(deadline) {
			f.note("no complete refresh tick within %s; figures are for what the provider saw until then", f.opts.timeout)
			return nil
		}
	}
}

// settle waits for requests still open at the provider and takes the final counters.
func (f *fleetResult) settle(ctx context.Context, p *provider) error {
	for {
		st, err := p.stats(ctx)
		if err != nil {
			return err
		}
		if st.TokenRequests > f.cycle.TokenRequests {
			f.lastReq = time.Now()
		}
		f.cycle = st
		if st.InFlight == 0 {
			return nil
		}
		if err := sleepUntil(ctx, time.Now().Add(pollEvery)); err != nil {
			return err
		}
	}
}

// waitQuiet returns the provider's counters once no token request arrived for quiet.
func waitQuiet(ctx context.Context, p *provider, quiet time.Duration, deadline time.Time) (providerStats, error) {
	var last providerStats
	since := time.Now()
	for {
		st, err := p.stats(ctx)
		if err != nil {
			return st, err
		}
		if st.TokenRequests != last.TokenRequests || st.InFlight > 0 {
			since = time.Now()
		}
		last = st
		if time.Since(since) >= quiet {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, errors.New("the provider did not go quiet before the deadline")
		}
		if err := sleepUntil(ctx, time.Now().Add(pollEvery)); err != nil {
			return st, err
		}
	}
}

func (f *fleetResult) addTicks(evs []tickEvent) {
	for _, ev := range evs {
		if ev.finished {
			f.ticks = append(f.ticks, ev.took)
		}
	}
}

// countRefreshed reads every role's status and counts the tokens obtained at or after since.
func countRefreshed(ctx context.Context, admin *api.Client, o fleetOptions, name func(int) string, since time.Time) (int64, error) {
	var n atomic.Int64
	floor := since.Truncate(time.Second) // last_refresh has whole seconds
	err := forEach(ctx, o.roles, o.workers, func(ctx context.Context, i int) error {
		s, err := admin.Logical().ReadWithContext(ctx, o.mount+"/roles/"+name(i)+"/status")
		if err != nil {
			return err
		}
		if s == nil {
			return fmt.Errorf("no status for role %s", name(i))
		}
		raw, _ := s.Data["last_refresh"].(string)
		at, err := time.Parse(time.RFC3339, raw)
		if err == nil && !at.Before(floor) {
			n.Add(1)
		}
		return nil
	})
	return n.Load(), err
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), true
	case int:
		return int64(n), true
	}
	return 0, false
}
