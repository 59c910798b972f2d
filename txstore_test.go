package idempotency_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/idemkit/idempotency"
)

// txFake is a TxStore over an InMemoryStore whose "transactions" are lists
// of effects held per claim: Complete commits them with the record, Release
// drops them, Again drops them and lets fn run again after errConflict.
type txFake struct {
	*idempotency.InMemoryStore
	mu        sync.Mutex
	pending   map[string][]string // by Token.Owner
	committed []string
	failNext  error // Complete's error, once
	dead      map[string]bool
	againErrs []error
}

var (
	errConflict     = errors.New("conflict")
	errNotCommitted = errors.New("not committed")
)

func newTxFake() *txFake {
	return &txFake{InMemoryStore: idempotency.NewInMemoryStore(), pending: map[string][]string{}, dead: map[string]bool{}}
}

// Peek hides the in-memory Peeker: replays go through Begin, as for a database.
func (*txFake) Peek(context.Context, string, string) (*idempotency.Cached, bool) { return nil, false }

func (s *txFake) write(ctx context.Context, effect string) {
	tok, _ := idempotency.TokenFromContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[tok.Owner] = append(s.pending[tok.Owner], effect)
}

func (s *txFake) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) error {
	s.mu.Lock()
	if s.dead[tok.Owner] { // its transaction is gone: learnt not committed
		s.mu.Unlock()
		return errNotCommitted
	}
	if err := s.failNext; err != nil {
		s.failNext = nil
		delete(s.pending, tok.Owner)
		s.dead[tok.Owner] = !errors.Is(err, errConflict)
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()
	if err := s.InMemoryStore.Complete(ctx, tok, c); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = append(s.committed, s.pending[tok.Owner]...)
	delete(s.pending, tok.Owner)
	return nil
}

func (s *txFake) Release(ctx context.Context, tok idempotency.Token) error {
	s.mu.Lock()
	delete(s.pending, tok.Owner)
	s.mu.Unlock()
	return s.InMemoryStore.Release(ctx, tok)
}

func (s *txFake) Again(_ context.Context, tok idempotency.Token, err error, runs int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.againErrs = append(s.againErrs, err)
	if !errors.Is(err, errConflict) || runs >= 3 {
		return false
	}
	delete(s.pending, tok.Owner)
	return true
}

func (s *txFake) effects() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.committed...)
}

func TestTxStoreConflictRunsAgain(t *testing.T) {
	s := newTxFake()
	e := idempotency.NewEngine(s)
	runs := 0
	res, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, func(ctx context.Context) (idempotency.Response, error) {
		runs++
		s.write(ctx, "run")
		if runs == 1 {
			return idempotency.Response{}, errConflict
		}
		return idempotency.Response{Status: 201, Body: []byte("ok")}, nil
	})
	if err != nil || res.Response.Status != 201 || !res.Recorded {
		t.Fatalf("Do = %+v, %v; want the second run's recorded 201", res, err)
	}
	if runs != 2 {
		t.Fatalf("fn ran %d times, want 2", runs)
	}
	if got := s.effects(); len(got) != 1 {
		t.Fatalf("committed effects %v, want exactly one", got)
	}
}

func TestTxStoreConflictBounded(t *testing.T) {
	s := newTxFake()
	e := idempotency.NewEngine(s)
	runs := 0
	_, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, func(ctx context.Context) (idempotency.Response, error) {
		runs++
		s.write(ctx, "run")
		return idempotency.Response{}, errConflict
	})
	if !errors.Is(err, errConflict) || runs != 3 {
		t.Fatalf("Do err %v after %d runs; want errConflict after 3 (the store's bound)", err, runs)
	}
	if got := s.effects(); len(got) != 0 {
		t.Fatalf("committed effects %v, want none", got)
	}
	// The claim was released: the next Do runs.
	res, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, func(ctx context.Context) (idempotency.Response, error) {
		s.write(ctx, "retry")
		return idempotency.Response{Status: 200}, nil
	})
	if err != nil || res.Replayed {
		t.Fatalf("retry = %+v, %v; want a fresh run", res, err)
	}
}

func TestTxStoreRefusedResponseLeavesNoEffect(t *testing.T) {
	s := newTxFake()
	e := idempotency.NewEngine(s)
	res, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, func(ctx context.Context) (idempotency.Response, error) {
		s.write(ctx, "run")
		return idempotency.Response{Status: 503}, nil
	})
	if err != nil || res.Recorded || res.Response.Status != 503 {
		t.Fatalf("Do = %+v, %v; want the unrecorded 503", res, err)
	}
	if got := s.effects(); len(got) != 0 {
		t.Fatalf("committed effects %v, want none", got)
	}
	if len(s.againErrs) != 1 || s.againErrs[0] != nil {
		t.Fatalf("Again called with %v, want once with nil", s.againErrs)
	}
}

func TestTxStoreFailedCommitIsNoAnswer(t *testing.T) {
	s := newTxFake()
	var seen idempotency.Execution
	e := idempotency.NewEngine(s, idempotency.WithObserver(&idempotency.Observer{
		Done: func(_ context.Context, x idempotency.Execution) { seen = x },
	}))
	s.failNext = idempotency.ErrStoreUnavailable
	res, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, func(ctx context.Context) (idempotency.Response, error) {
		s.write(ctx, "run")
		return idempotency.Response{Status: 201, Body: []byte("created")}, nil
	})
	var se *idempotency.StoreError
	if !errors.As(err, &se) || se.Op != "commit" || !errors.Is(err, idempotency.ErrStoreUnavailable) {
		t.Fatalf("Do err = %v; want a *StoreError (commit) matching ErrStoreUnavailable", err)
	}
	if res.Response.Status != 0 || res.Response.Body != nil {
		t.Fatalf("Do returned response %+v with a failed commit", res.Response)
	}
	if seen.Outcome != idempotency.OutcomeFailed || !errors.Is(seen.Err, idempotency.ErrStoreUnavailable) {
		t.Fatalf("observer saw %v / %v; want failed with the store error", seen.Outcome, seen.Err)
	}
	if got := s.effects(); len(got) != 0 {
		t.Fatalf("committed effects %v, want none", got)
	}
}

func TestTxStoreCommitConflictRunsAgain(t *testing.T) {
	s := newTxFake()
	e := idempotency.NewEngine(s)
	s.failNext = errConflict
	runs := 0
	res, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, func(ctx context.Context) (idempotency.Response, error) {
		runs++
		s.write(ctx, "run")
		return idempotency.Response{Status: 200, Body: []byte("ok")}, nil
	})
	if err != nil || !res.Recorded || runs != 2 {
		t.Fatalf("Do = %+v, %v after %d runs; want recorded after 2", res, err, runs)
	}
	if got := s.effects(); len(got) != 1 {
		t.Fatalf("committed effects %v, want exactly one", got)
	}
}
