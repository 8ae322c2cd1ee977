package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// readTarget is one kind of read the throughput phase measures.
type readTarget struct {
	label  string
	mount  string // for Vault's per-mount route timer
	leased bool
	// write marks a target that writes (sign/): Vault times it as an update.
	write bool
	read  reader
}

// readResult is a target's figures over all its measured intervals.
type readResult struct {
	target readTarget
	lat    latencies
	warmup int // successful warm-up reads (they register leases too)

	// From Vault's telemetry, summed over the intervals the target had to itself.
	intervals  int
	route      metricSample // vault.route.read.<mount>-: the request inside the mount, RPC included
	handle     metricSample // vault.core.handle_request: the whole request inside Vault
	register   metricSample // vault.expire.register: lease registration
	puts, gets int64        // vault.barrier.put / .get: storage writes and reads
	metricErrs []error
}

func (r *readResult) perRead(n int64) float64 {
	if r.route.Count == 0 {
		return 0
	}
	return float64(n) / float64(r.route.Count)
}

func meanMS(s metricSample) float64 {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / float64(s.Count)
}

const warmupTime = 2 * time.Second

// measureReads runs the targets in turn, round after round, each for one telemetry interval
// aligned to Vault's 10-second interval clock, so that sys/metrics can tell afterwards what each
// target cost inside Vault (storage writes, lease registrations) with no other target mixed in.
func measureReads(ctx context.Context, admin *api.Client, targets []readTarget, workers, rounds int, logf func(string, ...any)) ([]*readResult, error) {
	results := make([]*readResult, len(targets))
	for i, t := range targets {
		results[i] = &readResult{target: t}
		w := runFor(ctx, workers, time.Now().Add(warmupTime), t.read)
		if len(w.ok) == 0 {
			return nil, fmt.Errorf("%s: no read succeeded during warm-up: %v", t.label, w.firstErr)
		}
		results[i].warmup = len(w.ok)
	}

	start := time.Now().Truncate(metricsInterval).Add(metricsInterval)
	if err := sleepUntil(ctx, start); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for round := range rounds {
		for i, t := range targets {
			end := start.Add(metricsInterval)
			lat := runFor(ctx, workers, end, t.read)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logf("round %d/%d %-28s %7.0f reads/s  p50 %s  p99 %s  errors %d", round+1, rounds, t.label, lat.rate(), lat.percentile(0.5), lat.percentile(0.99), lat.errors)
			r := results[i]
			r.lat.add(lat)
			wg.Add(1)
			go func(interval time.Time) {
				defer wg.Done()
				// Vault shows an interval once the next one has begun.
				if err := sleepUntil(ctx, interval.Add(metricsInterval+time.Second)); err != nil {
					return
				}
				m, err := intervalMetrics(ctx, admin, interval)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					r.metricErrs = append(r.metricErrs, err)
					return
				}
				r.addInterval(m, t)
			}(start)
			start = end
		}
	}
	wg.Wait()
	return results, nil
}

func (r *readResult) addInterval(m *metricInterval, t readTarget) {
	r.intervals++
	op := "read"
	if t.write {
		op = "update"
	}
	addSample(&r.route, m.sample(routeMetric(op, t.mount)))
	addSample(&r.handle, m.sample("vault.core.handle_request"))
	addSample(&r.register, m.sample("vault.expire.register"))
	r.puts += m.sample("vault.barrier.put").Count
	r.gets += m.sample("vault.barrier.get").Count
}

func addSample(into *metricSample, s metricSample) {
	into.Count += s.Count
	into.Sum += s.Sum
	into.Max = max(into.Max, s.Max)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
