package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/idemkit/idempotency/dispatcher"
)

// dashboard is where the demo's widgets live: in this process's memory
// (memDashboard, with the memory and Redis stores), or in PostgreSQL
// (pgDashboard, with a postgres:// store), where each widget is written in
// the transaction its command's record commits in.
type dashboard interface {
	// add creates the widget named name and returns it as stored. It may run
	// more than once for one command (in a fresh transaction each time,
	// after a serialization failure): only the last run's widget remains.
	add(ctx context.Context, name string) (widget, error)
	// list returns every widget, oldest first.
	list(ctx context.Context) ([]widget, error)
	// where says where the widgets live: dashInMemory or dashInPostgres.
	where() string
}

type widget struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Limits of the demo commands.
const (
	maxWidgetName = 200
	maxReportMS   = 10000
)

// createWidget is widgets.create {"name":s} → 201 {"id","name","created_at"}.
func createWidget(db dashboard) dispatcher.Handler {
	return func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		var p struct {
			Name any `json:"name"`
		}
		if err := req.Decode(&p); err != nil {
			return dispatcher.Response{}, err
		}
		name, ok := p.Name.(string)
		if !ok || strings.TrimSpace(name) == "" || utf8.RuneCountInString(name) > maxWidgetName {
			return dispatcher.Response{}, dispatcher.Errorf(http.StatusBadRequest, "invalid_name",
				`"name" must be a non-empty string of at most %d characters`, maxWidgetName)
		}
		if strings.ContainsRune(name, 0) { // PostgreSQL's text cannot hold it: refused on every store alike
			return dispatcher.Response{}, dispatcher.Errorf(http.StatusBadRequest, "invalid_name",
				`"name" must not contain the character U+0000`)
		}
		w, err := db.add(ctx, name)
		if err != nil {
			return dispatcher.Response{}, fmt.Errorf("widgets.create: %w", err)
		}
		return dispatcher.Response{Status: http.StatusCreated, Data: w}, nil
	}
}

// listWidgets is widgets.list {} → 200 {"widgets":[…],"count":n}, oldest first.
func listWidgets(db dashboard) dispatcher.Handler {
	return func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		var p struct{}
		if err := req.Decode(&p); err != nil {
			return dispatcher.Response{}, err
		}
		ws, err := db.list(ctx)
		if err != nil {
			return dispatcher.Response{}, fmt.Errorf("widgets.list: %w", err)
		}
		return dispatcher.Response{Data: map[string]any{"widgets": ws, "count": len(ws)}}, nil
	}
}

// memDashboard keeps the widgets in this process's memory: one dashboard
// per process, shared by every caller, gone when the process ends.
type memDashboard struct {
	mu      sync.Mutex
	widgets []widget
}

func (db *memDashboard) add(_ context.Context, name string) (widget, error) {
	w := widget{ID: newID("wgt_"), Name: name, CreatedAt: time.Now().UTC()}
	db.mu.Lock()
	db.widgets = append(db.widgets, w)
	db.mu.Unlock()
	return w, nil
}

func (*memDashboard) where() string { return dashInMemory }

func (db *memDashboard) list(context.Context) ([]widget, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return append([]widget{}, db.widgets...), nil
}

// generateReport is reports.generate {"ms":n} → after n ms, 200 {"report_id"}.
// It stops early, with ctx's error, when ctx ends (shutdown). It keeps no
// state: on PostgreSQL its transaction writes nothing but its record.
func generateReport(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
	var p struct {
		MS *float64 `json:"ms"`
	}
	if err := req.Decode(&p); err != nil {
		return dispatcher.Response{}, err
	}
	var ms int64
	if p.MS != nil {
		if *p.MS < 0 || *p.MS > maxReportMS || *p.MS != math.Trunc(*p.MS) {
			return dispatcher.Response{}, dispatcher.Errorf(http.StatusBadRequest, "invalid_ms",
				`"ms" must be an integer from 0 to %d`, maxReportMS)
		}
		ms = int64(*p.MS)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return dispatcher.Response{}, fmt.Errorf("reports.generate: %w", context.Cause(ctx))
	}
	return dispatcher.Response{Data: map[string]any{"report_id": newID("rpt_"), "ms": ms}}, nil
}

// newID returns prefix and 16 random lower-case base32 characters.
func newID(prefix string) string {
	return prefix + strings.ToLower(rand.Text()[:16])
}
