package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// summary is a run's report, printed as a table or as JSON.
type summary struct {
	Label      string  `json:"label,omitempty"`
	Command    string  `json:"command"`
	Workers    int     `json:"workers"`
	Dup        float64 `json:"dup"`
	Keys       int     `json:"keys"`
	Seconds    float64 `json:"seconds"`
	Requests   int64   `json:"requests"`
	Throughput float64 `json:"throughput"` // requests per second

	Outcomes []outcomeStats   `json:"outcomes"` // executed, replayed, conflict, error, all
	Errors   map[string]int64 `json:"errors,omitempty"`

	DistinctKeys int    `json:"distinct_keys"`
	Settled      int    `json:"settled_keys"`    // keys retried after the load
	Unresolved   int    `json:"unresolved_keys"` // still without a 2xx answer
	Check        *check `json:"exactly_once,omitempty"`
}

// outcomeStats are the latencies of one outcome, in microseconds.
type outcomeStats struct {
	Outcome string `json:"outcome"`
	Count   int64  `json:"count"`
	P50     int64  `json:"p50_us"`
	P90     int64  `json:"p90_us"`
	P99     int64  `json:"p99_us"`
	P999    int64  `json:"p999_us"`
	Max     int64  `json:"max_us"`
}

// check is the exactly-once verdict.
type check struct {
	OK         bool   `json:"ok"`
	Unverified bool   `json:"unverified,omitempty"` // the check could not be completed
	Created    int64  `json:"widgets_created"`
	Succeeded  int    `json:"keys_succeeded"` // distinct keys with a 2xx answer
	Mismatched int    `json:"keys_with_differing_answers"`
	Reason     string `json:"reason,omitempty"`
}

func stats(name string, h *hdrhistogram.Histogram) outcomeStats {
	return outcomeStats{
		Outcome: name,
		Count:   h.TotalCount(),
		P50:     h.ValueAtQuantile(50),
		P90:     h.ValueAtQuantile(90),
		P99:     h.ValueAtQuantile(99),
		P999:    h.ValueAtQuantile(99.9),
		Max:     h.Max(),
	}
}

func summarize(cfg config, r *results) summary {
	s := summary{
		Label: cfg.label, Command: cfg.command, Workers: r.workers, Dup: cfg.dup, Keys: cfg.keys,
		Seconds: r.elapsed.Seconds(), DistinctKeys: len(r.keys.keys),
		Settled: r.settled, Unresolved: r.unresolved,
	}
	all := newHistogram()
	for o, h := range r.hists {
		s.Outcomes = append(s.Outcomes, stats(outcome(o).String(), h))
		all.Merge(h)
	}
	s.Outcomes = append(s.Outcomes, stats("all", all))
	s.Requests = all.TotalCount()
	s.Throughput = rate(s.Requests, r.elapsed)
	if len(r.errKinds) > 0 {
		s.Errors = r.errKinds
	}
	return s
}

// verdict compares the widgets created (after - before) with the distinct
// keys that got a 2xx answer.
func verdict(r *results, before, after int64, listErr error) *check {
	c := &check{Created: after - before}
	for _, st := range r.keys.keys {
		if st.succeeded {
			c.Succeeded++
		}
		if st.mismatch {
			c.Mismatched++
		}
	}
	switch {
	case c.Mismatched > 0:
		c.Reason = fmt.Sprintf("%d keys got different 2xx answers (a replay must repeat the first answer byte for byte)", c.Mismatched)
	case listErr == nil && c.Created > int64(c.Succeeded)+int64(r.unresolved):
		c.Reason = fmt.Sprintf("%d widgets created for %d distinct keys (%d more than there were keys)",
			c.Created, c.Succeeded+r.unresolved, c.Created-int64(c.Succeeded+r.unresolved))
	case listErr == nil && c.Created < int64(c.Succeeded):
		c.Reason = fmt.Sprintf("%d widgets created for %d keys answered 2xx (%d answers claimed a widget that was not created)",
			c.Created, c.Succeeded, int64(c.Succeeded)-c.Created)
	case listErr != nil:
		c.Unverified = true
		c.Reason = fmt.Sprintf("widgets.list after the load: %v", listErr)
	case r.unresolved > 0:
		c.Unverified = true
		c.Reason = fmt.Sprintf("%d keys never got a 2xx answer, even after settling; %d widgets created for %d keys answered 2xx",
			r.unresolved, c.Created, c.Succeeded)
	default:
		c.OK = true
	}
	return c
}

func writeJSON(w io.Writer, s summary) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

func us(v int64) string { return time.Duration(v * int64(time.Microsecond)).String() }

func writeTable(w io.Writer, s summary) error {
	fmt.Fprintf(w, "%s: %d requests in %.2fs with %d workers: %.0f req/s (dup %.2f, key window %d)\n",
		s.Command, s.Requests, s.Seconds, s.Workers, s.Throughput, s.Dup, s.Keys)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "outcome\tcount\tp50\tp90\tp99\tp99.9\tmax\t")
	for _, o := range s.Outcomes {
		if o.Count == 0 {
			fmt.Fprintf(tw, "%s\t0\t-\t-\t-\t-\t-\t\n", o.Outcome)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", o.Outcome, o.Count, us(o.P50), us(o.P90), us(o.P99), us(o.P999), us(o.Max))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	kinds := slices.SortedFunc(maps.Keys(s.Errors), func(a, b string) int {
		return cmp.Or(cmp.Compare(s.Errors[b], s.Errors[a]), cmp.Compare(a, b))
	})
	for _, k := range kinds {
		fmt.Fprintf(w, "  error %s: %d\n", k, s.Errors[k])
	}
	fmt.Fprintf(w, "keys: %d distinct; %d retried after the load, %d still without a 2xx answer\n", s.DistinctKeys, s.Settled, s.Unresolved)
	var err error
	switch c := s.Check; {
	case c == nil:
		_, err = fmt.Fprintln(w, "exactly-once: not checked (only widgets.create can be counted)")
	case c.OK:
		_, err = fmt.Fprintf(w, "exactly-once: OK, %d widgets created for %d distinct keys answered 2xx\n", c.Created, c.Succeeded)
	case c.Unverified:
		_, err = fmt.Fprintf(w, "exactly-once: NOT VERIFIED: %s\n", c.Reason)
	default:
		_, err = fmt.Fprintf(w, "exactly-once: VIOLATED: %s\n", c.Reason)
	}
	return err
}
