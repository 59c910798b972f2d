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

// dashboard is the demo's state: one set of widgets shared by every caller,
// in memory.
type dashboard struct {
	mu      sync.Mutex
	widgets []widget
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
func (db *dashboard) createWidget(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
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
	w := widget{ID: newID("wgt_"), Name: name, CreatedAt: time.Now().UTC()}
	db.mu.Lock()
	db.widgets = append(db.widgets, w)
	db.mu.Unlock()
	return dispatcher.Response{Status: http.StatusCreated, Data: w}, nil
}

// listWidgets is widgets.list {} → 200 {"widgets":[…],"count":n}, oldest first.
func (db *dashboard) listWidgets(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
	var p struct{}
	if err := req.Decode(&p); err != nil {
		return dispatcher.Response{}, err
	}
	db.mu.Lock()
	ws := append([]widget{}, db.widgets...)
	db.mu.Unlock()
	return dispatcher.Response{Data: map[string]any{"widgets": ws, "count": len(ws)}}, nil
}

// generateReport is reports.generate {"ms":n} → after n ms, 200 {"report_id"}.
// It stops early, with ctx's error, when ctx ends (shutdown).
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
