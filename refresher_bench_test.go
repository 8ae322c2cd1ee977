package oauth

import (
	"fmt"
	"testing"
	"time"
)

const benchRoles = 10000

// benchQueue holds benchRoles roles due evenly over an hour, one minute's worth per tick.
func benchQueue(names []string) *refreshQueue {
	q := newRefreshQueue()
	for i, name := range names {
		q.set(name, benchDue(i))
	}
	return q
}

func benchDue(i int) int64 {
	return t0.Add(time.Duration(i) * time.Hour / benchRoles).UnixMilli()
}

func benchNames() []string {
	names := make([]string, benchRoles)
	for i := range names {
		names[i] = fmt.Sprintf("role-%05d", i)
	}
	return names
}

// BenchmarkRefreshQueuePush10000Roles builds a queue of 10,000 roles, as initialize does.
func BenchmarkRefreshQueuePush10000Roles(b *testing.B) {
	names := benchNames()
	b.ReportAllocs()
	for b.Loop() {
		benchQueue(names)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRoles), "ns/role")
}

// BenchmarkRefreshQueueUpdate10000Roles moves one role in a queue of 10,000, as a token store
// or role write does.
func BenchmarkRefreshQueueUpdate10000Roles(b *testing.B) {
	names := benchNames()
	q := benchQueue(names)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q.set(names[i%benchRoles], benchDue((i*7919)%benchRoles))
		i++
	}
}

// BenchmarkRefreshQueuePopDue10000Roles is one tick's queue work with 10,000 roles due over an
// hour: pop the minute that is due (about 167 roles) and schedule them an hour later.
func BenchmarkRefreshQueuePopDue10000Roles(b *testing.B) {
	names := benchNames()
	q := benchQueue(names)
	b.ReportAllocs()
	minute := 0
	for b.Loop() {
		now := t0.Add(time.Duration(minute+1) * time.Minute).UnixMilli()
		due := q.popDue(now)
		for _, item := range due {
			q.set(item.Key, item.Priority+time.Hour.Milliseconds())
		}
		minute++
	}
}
