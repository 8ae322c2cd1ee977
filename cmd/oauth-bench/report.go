package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

func (rep *report) markdown() string {
	var b strings.Builder
	o := rep.opts
	fmt.Fprintf(&b, "## Load test: Vault %s (%s storage), the plugin, the test provider\n\n", rep.vaultVersion, rep.storage)
	fmt.Fprintf(&b, "Run %s, %s in all. Vault, the plugin, the provider and this tool share the machine.\n\n",
		rep.started.UTC().Format(time.RFC3339), rep.took.Round(time.Second))
	if rep.reads != nil {
		rep.readsMarkdown(&b)
	}
	if rep.exchange != nil {
		rep.exchange.markdown(&b)
	}
	if rep.signs != nil {
		rep.signsMarkdown(&b)
	}
	if rep.burst != nil {
		rep.burstMarkdown(&b)
	}
	if rep.fleet != nil {
		rep.fleetMarkdown(&b)
	}
	if rep.scrape != nil {
		rep.scrape.markdown(&b)
	}
	if !o.has("reads") && !o.has("exchange") && !o.has("sign") && !o.has("burst") && !o.has("refresh") && !o.has("metrics") {
		b.WriteString("No phase ran.\n")
	}
	return b.String()
}

func (rep *report) readsMarkdown(b *strings.Builder) {
	o := rep.opts
	fmt.Fprintf(b, "### Reads: %d s per target in 10 s turns, alternating\n\n", int(rep.reads[0].results[0].lat.elapsed.Round(time.Second).Seconds()))
	b.WriteString("Clients use a non-root token with a read-only policy. Latency is as the client sees it; ")
	b.WriteString("\"in Vault\" (`vault.core.handle_request`) and the per-read counts come from Vault's telemetry ")
	b.WriteString("(`sys/metrics`) for the 10 s intervals the target had to itself.")
	if o.quietLogs {
		b.WriteString(" Vault's loggers were at `info` for this phase.")
	}
	b.WriteString("\n\n")
	b.WriteString("| clients | read | lease | reads | errors | reads/s | p50 | p99 | in Vault, mean | storage writes / read | storage reads / read | lease registrations / read |\n")
	b.WriteString("|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, lvl := range rep.reads {
		for _, r := range lvl.results {
			lease := "no"
			if r.target.leased {
				lease = "yes"
			}
			fmt.Fprintf(b, "| %d | %s | %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s |\n",
				lvl.clients, r.target.label, lease, len(r.lat.ok), r.lat.errors, r.lat.rate(),
				ms(r.lat.percentile(0.5)), ms(r.lat.percentile(0.99)),
				msFloat(meanMS(r.handle)), ratio(r, r.puts), ratio(r, r.gets), ratio(r, r.register.Count))
		}
	}
	b.WriteString("\n")
	b.WriteString("Side by side (same run, same server, alternating turns):\n\n")
	b.WriteString("| clients | reads/s `lease=false` ÷ leased | reads/s `lease=false` ÷ KV | reads/s leased ÷ KV | p50 `lease=false` ÷ leased | p99 `lease=false` ÷ leased | lease registration, mean per leased read |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, lvl := range rep.reads {
		leased, free, kv := lvl.results[0], lvl.results[1], lvl.results[2]
		register := "n/a"
		if leased.register.Count > 0 {
			register = msFloat(meanMS(leased.register))
		}
		fmt.Fprintf(b, "| %d | **%s** | %s | %s | %s | %s | %s |\n", lvl.clients,
			times(free.lat.rate(), leased.lat.rate()), times(free.lat.rate(), kv.lat.rate()), times(leased.lat.rate(), kv.lat.rate()),
			timesD(free.lat.percentile(0.5), leased.lat.percentile(0.5)), timesD(free.lat.percentile(0.99), leased.lat.percentile(0.99)), register)
	}
	b.WriteString("\n")
	if rep.revoke > 0 { // else the phase stopped early: see the errors
		rep.leasesMarkdown(b)
	}
	for _, lvl := range rep.reads {
		for _, r := range lvl.results {
			if r.lat.firstErr != nil {
				fmt.Fprintf(b, "- %d concurrent, %s: first error: %v\n", lvl.clients, r.target.label, r.lat.firstErr)
			}
			for _, err := range r.metricErrs {
				fmt.Fprintf(b, "- %d concurrent, %s: an interval's telemetry is missing: %v\n", lvl.clients, r.target.label, err)
			}
		}
	}
	b.WriteString("\n")
}

func (rep *report) leasesMarkdown(b *strings.Builder) {
	leases := rep.leasesAfter - rep.leasesBefore
	fmt.Fprintf(b, "- **Leases:** Vault's leases under `%s/creds/%s/` went from %d to %d over %d successful creds reads (warm-up included): %.2f per read.",
		rep.opts.mount, hotRole, rep.leasesBefore, rep.leasesAfter, rep.credsReads, float64(leases)/float64(max(rep.credsReads, 1)))
	if m := rep.vaultMem; m[0].rssKiB > 0 && m[1].rssKiB > 0 && leases > 0 {
		fmt.Fprintf(b, " Vault's RSS went from %s to %s meanwhile (%.1f KiB per lease, GC permitting).", mib(m[0].rssKiB), mib(m[1].rssKiB), float64(m[1].rssKiB-m[0].rssKiB)/float64(leases))
	}
	if rep.noLeaseReads > 0 {
		fmt.Fprintf(b, " Under `%s/creds/%s/` (`lease=false`) they went from %d to **%d** over %d successful reads.",
			rep.opts.mount, noLeaseRole, rep.noLeaseLeases[0], rep.noLeaseLeases[1], rep.noLeaseReads)
	}
	if rep.leasesAfter > 0 {
		fmt.Fprintf(b, " Revoking the leases (`sys/leases/revoke-prefix`, one revoke request to the plugin and storage deletes each, as at expiry) took %s: %s per lease.",
			rep.revoke.Round(time.Millisecond), ms(rep.revoke/time.Duration(rep.leasesAfter)))
	}
	b.WriteString("\n")
}

func (rep *report) burstMarkdown(b *strings.Builder) {
	r := rep.burst
	fmt.Fprintf(b, "### Cold role: %d concurrent reads\n\n", r.readers)
	fmt.Fprintf(b, "All readers start together on a role that has no token; the provider holds each token request for %s.\n\n", r.delay)
	b.WriteString("| readers | grants the provider received (limit 1) | all token requests | reads OK | errors | distinct tokens returned | p50 | p99 | max |\n")
	b.WriteString("|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	fmt.Fprintf(b, "| %d | %d | %d | %d | %d | %d | %s | %s | %s |\n\n",
		r.readers, r.grants, r.total, len(r.lat.ok), r.lat.errors, r.distinct,
		ms(r.lat.percentile(0.5)), ms(r.lat.percentile(0.99)), ms(r.lat.percentile(1)))
	if r.lat.firstErr != nil {
		fmt.Fprintf(b, "First error: %v\n\n", r.lat.firstErr)
	}
}

func (rep *report) fleetMarkdown(b *strings.Builder) {
	f := rep.fleet
	o := f.opts
	fmt.Fprintf(b, "### Refresh cycle: %d roles, %s tokens\n\n", o.roles, o.ttl)
	fmt.Fprintf(b, "Roles on their own mount `%s/` share one client; the provider holds each token request for %s. ", o.mount, o.delay)
	b.WriteString("Each role gets its first token by a read; once the provider has gone quiet, the next `PeriodicFunc` tick is the measured cycle, ")
	b.WriteString("and nothing but the refresher calls the provider during it.\n\n")
	b.WriteString("| measure | value |\n|---|--:|\n")
	row := func(k, v string) { fmt.Fprintf(b, "| %s | %s |\n", k, v) }
	row("roles created (concurrency "+fmt.Sprint(o.workers)+")", fmt.Sprintf("%s (%.0f/s)", f.create.Round(time.Millisecond), float64(o.roles)/f.create.Seconds()))
	row("first token read for each role", fmt.Sprintf("%s (%.0f/s)", f.fill.Round(time.Millisecond), float64(o.roles)/f.fill.Seconds()))
	row("provider requests while creating and first reading", fmt.Sprintf("%d (peak %d concurrent)", f.fillStats.TokenRequests, f.fillStats.PeakInFlight))
	row("`max_concurrent_refreshes`", fmt.Sprint(f.maxConcurrent))
	row("**provider requests in the cycle**", fmt.Sprintf("**%d**", f.cycle.TokenRequests))
	row("**provider peak concurrent requests in the cycle**", fmt.Sprintf("**%d**", f.cycle.PeakInFlight))
	if !f.tick.at.IsZero() {
		row("**`PeriodicFunc` tick duration** (Vault log)", "**"+f.tick.took.Round(time.Millisecond).String()+"**")
	} else {
		row("`PeriodicFunc` tick duration (Vault log)", "not seen")
	}
	if !f.firstReq.IsZero() {
		row("first → last provider request (polled every "+pollEvery.String()+")", f.lastReq.Sub(f.firstReq).Round(time.Millisecond).String())
	}
	row("roles whose status shows a refresh in the cycle", fmt.Sprintf("%d / %d", f.refreshed, o.roles))
	row("all ticks of the mount during the phase", tickList(f.ticks))
	row("**plugin process peak RSS** (VmHWM)", "**"+mib(f.memAfter.hwmKiB)+"**")
	row("plugin RSS before the roles / after the cycle", mib(f.memBefore.rssKiB)+" / "+mib(f.memAfter.rssKiB))
	b.WriteString("\n")
	if slices.ContainsFunc(f.ticks, func(d time.Duration) bool { return d > tickPeriod }) {
		fmt.Fprintf(b, "- A tick ran longer than Vault's %s tick period: Vault starts no rollback for a mount while one is running, so the next tick came late. Vault cancels a tick after 90 s (its maximum request duration).\n", tickPeriod)
	}
	for _, n := range f.notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	if len(f.notes) > 0 {
		b.WriteString("\n")
	}
}

// tickPeriod is how often Vault's rollback manager calls PeriodicFunc.
const tickPeriod = time.Minute

func tickList(ticks []time.Duration) string {
	if len(ticks) == 0 {
		return "none"
	}
	out := make([]string, len(ticks))
	for i, d := range ticks {
		out[i] = d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%d: %s", len(ticks), strings.Join(out, ", "))
}

func ms(d time.Duration) string { return msFloat(float64(d) / float64(time.Millisecond)) }

func msFloat(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.0f µs", v*1000)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func ratio(r *readResult, n int64) string {
	if r.route.Count == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", r.perRead(n))
}

func times(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func timesD(a, b time.Duration) string { return times(float64(a), float64(b)) }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
