// Command benchchart draws throughput against workers, one line per store,
// from the JSON summaries of idemload runs (idemload -json -label STORE),
// as a PNG.
//
// Usage:
//
//	benchchart -o throughput.png -title "…" load-memory.json load-redis.json …
//
// Each input file holds one or more idemload JSON summaries; runs are
// grouped by their label (the store), and runs of one label with the same
// worker count are averaged.
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// run is the part of an idemload summary the chart needs.
type run struct {
	Label      string  `json:"label"`
	Workers    int     `json:"workers"`
	Throughput float64 `json:"throughput"`
}

func main() {
	out := flag.String("o", "throughput.png", "output PNG")
	title := flag.String("title", "idemd throughput (idemload, widgets.create)", "chart title")
	flag.Parse()
	if err := draw(*out, *title, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "benchchart:", err)
		os.Exit(1)
	}
}

func readRuns(names []string) ([]run, error) {
	var runs []run
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(f)
		for {
			var r run
			if err := dec.Decode(&r); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if r.Label == "" {
				r.Label = name
			}
			runs = append(runs, r)
		}
		f.Close()
	}
	if len(runs) == 0 {
		return nil, errors.New("no idemload runs in the input")
	}
	return runs, nil
}

// series averages the runs of each label per worker count.
func series(runs []run) (labels []string, points map[string]plotter.XYs) {
	type key struct {
		label   string
		workers int
	}
	sum, n := map[key]float64{}, map[key]int{}
	for _, r := range runs {
		k := key{r.Label, r.Workers}
		sum[k] += r.Throughput
		n[k]++
		if !slices.Contains(labels, r.Label) {
			labels = append(labels, r.Label)
		}
	}
	points = map[string]plotter.XYs{}
	for k, s := range sum {
		points[k.label] = append(points[k.label], plotter.XY{X: float64(k.workers), Y: s / float64(n[k])})
	}
	for _, pts := range points {
		slices.SortFunc(pts, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
	}
	return labels, points
}

func draw(out, title string, inputs []string) error {
	runs, err := readRuns(inputs)
	if err != nil {
		return err
	}
	labels, points := series(runs)
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "workers (concurrent keep-alive connections)"
	p.Y.Label.Text = "requests per second"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = workerTicks{}
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	var lines []any
	for _, l := range labels {
		lines = append(lines, l, points[l])
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, out)
}

// workerTicks labels powers of two.
type workerTicks struct{}

func (workerTicks) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for w := 1.0; w <= max*1.0001; w *= 2 {
		if w >= min*0.9999 {
			ts = append(ts, plot.Tick{Value: w, Label: fmt.Sprintf("%.0f", w)})
		}
	}
	return ts
}
