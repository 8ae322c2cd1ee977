package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// latencies is what a batch of reads measured.
type latencies struct {
	ok       []time.Duration
	errors   int
	firstErr error
	elapsed  time.Duration
}

func (l *latencies) add(o *latencies) {
	l.ok = append(l.ok, o.ok...)
	l.errors += o.errors
	if l.firstErr == nil {
		l.firstErr = o.firstErr
	}
	l.elapsed += o.elapsed
}

// rate is successful reads per second of wall time.
func (l *latencies) rate() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(len(l.ok)) / l.elapsed.Seconds()
}

// percentile is the nearest-rank percentile (p in (0,1]) of the successful reads.
func (l *latencies) percentile(p float64) time.Duration {
	if len(l.ok) == 0 {
		return 0
	}
	s := slices.Clone(l.ok)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// reader performs one read and checks the answer.
type reader func(ctx context.Context) error

// readPath reads path and requires keys in the answer's data, so that an empty answer is not
// mistaken for a fast one.
func readPath(c *api.Client, path string, keys ...string) reader {
	return func(ctx context.Context) error {
		s, err := c.Logical().ReadWithContext(ctx, path)
		if err != nil {
			return err
		}
		for _, key := range keys {
			if s == nil || s.Data[key] == nil {
				return fmt.Errorf("read %s: no %q in the answer", path, key)
			}
		}
		return nil
	}
}

// runFor has workers goroutines call read back to back until the deadline.
func runFor(ctx context.Context, workers int, until time.Time, read reader) *latencies {
	start := time.Now()
	results := make([]latencies, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			for ctx.Err() == nil && time.Now().Before(until) {
				t0 := time.Now()
				if err := read(ctx); err != nil {
					r.errors++
					if r.firstErr == nil {
						r.firstErr = err
					}
					continue
				}
				r.ok = append(r.ok, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	out := &latencies{elapsed: time.Since(start)}
	for i := range results {
		results[i].elapsed = 0
		out.add(&results[i])
	}
	return out
}

// burst starts n reads at the same moment and waits for all of them.
func burst(ctx context.Context, n int, read func(ctx context.Context) (string, error)) (*latencies, map[string]int) {
	type result struct {
		d     time.Duration
		value string
		err   error
	}
	results := make([]result, n)
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			t0 := time.Now()
			v, err := read(ctx)
			results[i] = result{time.Since(t0), v, err}
		}()
	}
	start := time.Now()
	close(ready)
	wg.Wait()
	out := &latencies{elapsed: time.Since(start)}
	distinct := map[string]int{}
	for _, r := range results {
		if r.err != nil {
			out.errors++
			if out.firstErr == nil {
				out.firstErr = r.err
			}
			continue
		}
		out.ok = append(out.ok, r.d)
		distinct[r.value]++
	}
	return out, distinct
}

// forEach calls f for 0..n-1 with workers goroutines and returns the first error.
func forEach(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for i := range n {
		select {
		case next <- i:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}
