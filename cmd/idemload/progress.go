package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// plainInterval is how often progress is printed when stderr is not a terminal.
const plainInterval = time.Second

// progress shows how far the load is: a progress bar on a terminal, a plain
// line every plainInterval otherwise.
type progress struct {
	stopped chan struct{}
	wg      sync.WaitGroup
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func startProgress(cfg config, out io.Writer, start time.Time, done, errs *atomic.Int64) *progress {
	p := &progress{stopped: make(chan struct{})}
	if cfg.quiet {
		return p
	}
	if isTerminal(out) {
		p.bar(cfg, out, start, done, errs)
	} else {
		p.plain(cfg, out, start, done, errs)
	}
	return p
}

// bar counts requests against -requests, or milliseconds against -duration.
func (p *progress) bar(cfg config, out io.Writer, start time.Time, done, errs *atomic.Int64) {
	total := cfg.requests
	desc := "requests"
	if total == 0 {
		total, desc = cfg.duration.Milliseconds(), "ms"
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	update := func() {
		n := time.Since(start).Milliseconds()
		if cfg.requests > 0 {
			n = done.Load()
		}
		bar.Describe(fmt.Sprintf("%s  %.0f req/s  %d errors", desc, rate(done.Load(), time.Since(start)), errs.Load()))
		_ = bar.Set64(min(n, total))
	}
	p.wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				update()
			case <-p.stopped:
				_ = bar.Finish()
				return
			}
		}
	})
}

func (p *progress) plain(cfg config, out io.Writer, start time.Time, done, errs *atomic.Int64) {
	p.wg.Go(func() {
		t := time.NewTicker(plainInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				el := time.Since(start)
				fmt.Fprintf(out, "idemload: %5.1fs  %d requests  %.0f req/s  %d errors\n",
					el.Seconds(), done.Load(), rate(done.Load(), el), errs.Load())
			case <-p.stopped:
				return
			}
		}
	})
}

func (p *progress) stop() {
	close(p.stopped)
	p.wg.Wait()
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
