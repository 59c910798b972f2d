package pgstore

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemkit/idempotency"
)

// A transactional claim held by one process (here: a store on a pool of
// its own, which this process's registry of claims does not serve) is
// listed by another process's Claims, under the short ID of its lock (the
// first 16 hex digits of its record's ID), with no owner or fence (only
// its own process knows them); that process's Purge of that ID ends the
// claim's session, so nothing the command wrote commits, its Complete
// fails with ErrLeaseLost, and the retry runs the command again, once.
// Inspect and Purge by the full ID find it too.
func TestPurgeTxClaimOfAnotherProcess(t *testing.T) {
	ctx := context.Background()
	poolA := testPool(t)
	schema := testSchema(t, poolA)
	a := newUnmigrated(t, poolA, WithSchema(schema))
	err := a.MigrateWith(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE "+schema+".effects (run int NOT NULL)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b := newMigrated(t, testPool(t), WithSchema(schema))
	engine := idempotency.NewEngine(a.Transactional(), idempotency.WithLease(time.Minute))

	var runs atomic.Int32
	fences := make(chan uint64, 1)
	unblock := make(chan struct{})
	cmd := func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		run := runs.Add(1)
		if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".effects VALUES ($1)", run); err != nil {
			return idempotency.Response{}, err
		}
		if run == 1 {
			tok, _ := idempotency.TokenFromContext(ctx)
			fences <- tok.Fence
			<-unblock
		}
		return idempotency.Response{Status: 201, Body: []byte("charged")}, nil
	}
	req := idempotency.Request{Key: "order-42", Identity: "shop-7"}
	first := make(chan error, 1)
	go func() {
		_, err := Run(ctx, engine, req, cmd)
		first <- err
	}()
	fence := <-fences

	claims, err := b.Claims(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	full := b.RecordID(req.Key, req.Identity)
	id := full[:shortIDLen]
	if len(claims) != 1 || claims[0].ID != id || claims[0].Fence != 0 || claims[0].State != idempotency.RecordInFlight {
		t.Fatalf("Claims from another pool = %+v; want the transactional claim %s (fence %d, not known there)", claims, id, fence)
	}
	if c := claims[0]; c.ClaimedAt.IsZero() || time.Since(c.ClaimedAt) > time.Minute || c.Owner != "" {
		t.Errorf("claim = %+v; want its transaction's start, and no owner (another process's)", c)
	}
	if own, err := a.Claims(ctx, 0, 0); err != nil || len(own) != 1 || own[0].ID != full || own[0].Fence != fence || own[0].Owner == "" {
		t.Errorf("Claims in the holder's process = %+v, %v; want the claim under %s, fence %d, with its owner", own, err, full, fence)
	}
	if info, err := b.Inspect(ctx, full); err != nil || info.State != idempotency.RecordInFlight || info.ClaimedAt.IsZero() {
		t.Errorf("Inspect by the full ID = %+v, %v; want the claim in flight", info, err)
	}
	if got, err := b.Claims(ctx, time.Hour, 0); err != nil || len(got) != 0 {
		t.Errorf("Claims(1h) = %+v, %v; want none", got, err)
	}
	if info, err := b.Inspect(ctx, id); err != nil || info.State != idempotency.RecordInFlight || info.ID != id {
		t.Errorf("Inspect = %+v, %v; want the claim in flight", info, err)
	}

	was, err := b.Purge(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if was.State != idempotency.RecordInFlight {
		t.Errorf("Purge = %+v; want the claim it took over", was)
	}
	for _, id := range []string{id, full} {
		if info, err := b.Inspect(ctx, id); err != nil || info.State != idempotency.RecordAbsent {
			t.Errorf("Inspect(%s) after Purge = %+v, %v; want absent", id, info, err)
		}
	}
	close(unblock)
	if err := <-first; !errors.Is(err, idempotency.ErrLeaseLost) || !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("the purged command's Do = %v; want ErrNotCommitted and ErrLeaseLost", err)
	}
	effects := func() []int {
		t.Helper()
		rows, err := poolA.Query(ctx, "SELECT run FROM "+schema+".effects ORDER BY run")
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := effects(); len(got) != 0 {
		t.Fatalf("effects after the purge = %v; want none (the purged run rolled back)", got)
	}
	for range 2 { // the retry runs the command; the next one replays it
		res, err := Run(ctx, engine, req, cmd)
		if err != nil || res.Response.Status != 201 {
			t.Fatalf("retry = %+v, %v", res, err)
		}
	}
	if got := effects(); len(got) != 1 || got[0] != 2 {
		t.Errorf("effects = %v; want the retry's alone, [2]", got)
	}
}

// A claim made by a version that did not date its claims (claimed_at NULL)
// is listed whatever the age asked for, with a zero ClaimedAt, first.
func TestClaimsListsUndatedClaims(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	req := idempotency.ClaimRequest{Owner: "old", Fingerprint: "fp", Lease: time.Minute}
	old, err := st.Begin(ctx, "old", "alice", req)
	if err != nil || old.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin = %+v, %v", old, err)
	}
	req.Owner = "new"
	if cl, err := st.Begin(ctx, "new", "alice", req); err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin = %+v, %v", cl, err)
	}
	_, err = st.pool.Exec(ctx, "UPDATE "+st.names().table+" SET claimed_at = NULL WHERE id = $1", st.recordID("old", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	id := st.RecordID("old", "alice")
	got, err := st.Claims(ctx, time.Hour, 0)
	if err != nil || len(got) != 1 || got[0].ID != id || !got[0].ClaimedAt.IsZero() || got[0].Owner != "old" || got[0].Fence != old.Token.Fence {
		t.Fatalf("Claims(1h) = %+v, %v; want the undated claim alone", got, err)
	}
	if all, err := st.Claims(ctx, 0, 0); err != nil || len(all) != 2 || all[0].ID != id {
		t.Errorf("Claims(0) = %+v, %v; want both, the undated one first", all, err)
	}
	if info, err := st.Inspect(ctx, id); err != nil || info.State != idempotency.RecordInFlight || !info.ClaimedAt.IsZero() {
		t.Errorf("Inspect = %+v, %v; want in flight, not dated", info, err)
	}
}

// A session holding a record's advisory lock for reasons of its own makes
// Begin answer "in flight", and Inspect say so; Purge refuses to end it,
// and Claims does not list it.
func TestPurgeRefusesForeignLock(t *testing.T) {
	ctx := context.Background()
	st := newStore(t).Transactional()
	id := st.RecordID("k", "alice")
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockOf(st.recordID("k", "alice"))); err != nil {
		t.Fatal(err)
	}
	cl, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err != nil || cl.Status != idempotency.ClaimInFlight {
		t.Fatalf("Begin = %+v, %v; want in flight", cl, err)
	}
	if info, err := st.Inspect(ctx, id); err != nil || info.State != idempotency.RecordInFlight || info.Fence != 0 {
		t.Errorf("Inspect = %+v, %v; want in flight, nothing known", info, err)
	}
	if got, err := st.Claims(ctx, 0, 0); err != nil || len(got) != 0 {
		t.Errorf("Claims = %+v, %v; want none", got, err)
	}
	if _, err := st.Purge(ctx, id); !errors.Is(err, ErrLockNotAClaim) {
		t.Errorf("Purge = %v; want %v", err, ErrLockNotAClaim)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("the lock holder's session after Purge: %v; want it alive", err)
	}
}

func TestParseRecordID(t *testing.T) {
	full := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		id       string
		from, to string // hex; to "" for no bound
		ok       bool
	}{
		{full, full, full + "00", true},
		{"0123456789abcdef", "0123456789abcdef", "0123456789abcdf0", true},
		{"00000000000000ff", "00000000000000ff", "0000000000000100", true},
		{"ffffffffffffffff", "ffffffffffffffff", "", true},
		{strings.ToUpper(full), "", "", false},
		{full[:62], "", "", false},
		{"0123456789abcde", "", "", false},
		{"", "", "", false},
	} {
		ref, err := parseRecordID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("parseRecordID(%q) = %v, want ok %v", tc.id, err, tc.ok)
			continue
		}
		if !tc.ok {
			if !errors.Is(err, idempotency.ErrInvalidArgument) {
				t.Errorf("parseRecordID(%q) = %v, want ErrInvalidArgument", tc.id, err)
			}
			continue
		}
		if got := hex.EncodeToString(ref.from); got != tc.from {
			t.Errorf("parseRecordID(%q).from = %s, want %s", tc.id, got, tc.from)
		}
		if got := hex.EncodeToString(ref.to); got != tc.to || (tc.to == "") != (ref.to == nil) {
			t.Errorf("parseRecordID(%q).to = %s, want %q", tc.id, got, tc.to)
		}
		if want := lockOf(ref.from); ref.lock != want {
			t.Errorf("parseRecordID(%q).lock = %x, want %x", tc.id, ref.lock, want)
		}
	}
}

// A transactional claim changes nothing that others see of its session
// but its locks: no application_name, no write before COMMIT.
func TestTxClaimLeavesApplicationName(t *testing.T) {
	ctx := context.Background()
	st := newStore(t).Transactional()
	cl, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin = %+v, %v", cl, err)
	}
	defer st.Release(ctx, cl.Token)
	c := claimOf(cl.Token)
	var app string
	if err := st.pool.QueryRow(ctx, "SELECT application_name FROM pg_stat_activity WHERE pid = $1", int32(c.pid.Load())).Scan(&app); err != nil {
		t.Fatal(err)
	}
	var own string
	if err := st.pool.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&own); err != nil {
		t.Fatal(err)
	}
	if app != own {
		t.Errorf("the claim's session runs as %q, the pool's others as %q", app, own)
	}
}
