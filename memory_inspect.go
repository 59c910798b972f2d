package idempotency

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"
)

// memIDPrefix starts the ID of every InMemoryStore record: "m:", then the
// key and the identity, each base64url-encoded without padding, joined
// by '.'. The ID gives the key and identity back, so Claims can name them.
const memIDPrefix = "m:"

// RecordID implements Inspector. The ID holds the key and the identity,
// encoded: the store is in this process's memory, so it hides nothing.
func (s *InMemoryStore) RecordID(key, identity string) string {
	enc := base64.RawURLEncoding
	var b strings.Builder
	b.Grow(len(memIDPrefix) + enc.EncodedLen(len(key)) + 1 + enc.EncodedLen(len(identity)))
	b.WriteString(memIDPrefix)
	b.WriteString(enc.EncodeToString([]byte(key)))
	b.WriteByte('.')
	b.WriteString(enc.EncodeToString([]byte(identity)))
	return b.String()
}

// parseMemID is the inverse of RecordID.
func parseMemID(id string) (key, identity string, err error) {
	rest, ok := strings.CutPrefix(id, memIDPrefix)
	k, i, ok2 := strings.Cut(rest, ".")
	if ok && ok2 {
		kb, err1 := base64.RawURLEncoding.DecodeString(k)
		ib, err2 := base64.RawURLEncoding.DecodeString(i)
		if err1 == nil && err2 == nil {
			return string(kb), string(ib), nil
		}
	}
	return "", "", fmt.Errorf("%w: %q is not a record ID of an in-memory store", ErrInvalidArgument, id)
}

// Inspect implements Inspector.
func (s *InMemoryStore) Inspect(_ context.Context, id string) (RecordInfo, error) {
	return s.inspect("inspect", id, false)
}

// Purge implements Inspector. The store's fences are global, so the next
// claim of the key draws a greater one.
func (s *InMemoryStore) Purge(_ context.Context, id string) (RecordInfo, error) {
	return s.inspect("purge", id, true)
}

// inspect describes the record named id, and removes it when purge is set.
func (s *InMemoryStore) inspect(op, id string, purge bool) (RecordInfo, error) {
	key, identity, err := parseMemID(id)
	if err != nil {
		return RecordInfo{}, fmt.Errorf("%s: %w", op, err)
	}
	now := s.now().UnixNano()
	h := s.hash(key, identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.find(h, key, identity)
	info := s.info(e, id, now)
	if purge && e != nil {
		s.remove(e, h)
	}
	return info, nil
}

// Claims implements Inspector: a walk over every record, under the
// store's lock.
func (s *InMemoryStore) Claims(_ context.Context, olderThan time.Duration, limit int) ([]RecordInfo, error) {
	now := s.now().UnixNano()
	cut := now - int64(olderThan)
	var out []RecordInfo
	s.mu.Lock()
	collect := func(e *memEntry) {
		if !e.done() && now < e.until && e.at <= cut {
			out = append(out, s.info(e, "", now))
		}
	}
	for _, e := range s.records {
		collect(e)
	}
	for _, e := range s.collided {
		collect(e)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b RecordInfo) int {
		return cmp.Or(a.ClaimedAt.Compare(b.ClaimedAt), cmp.Compare(a.Fence, b.Fence))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	for i := range out {
		out[i].ID = s.RecordID(out[i].Key, out[i].Identity)
	}
	return out, nil
}

// info describes e (nil: absent) at now, as Inspect does; id is the
// record's ID when the caller has it.
func (s *InMemoryStore) info(e *memEntry, id string, now int64) RecordInfo {
	if e == nil || now >= e.until {
		return RecordInfo{ID: id}
	}
	if !e.done() {
		return RecordInfo{
			ID: id, State: RecordInFlight, Key: e.key, Identity: e.identity,
			Fence: e.x.fence, Owner: e.x.owner, Fingerprint: e.fingerprint,
			ClaimedAt: time.Unix(0, e.at), LeaseLeft: time.Duration(e.until - now),
		}
	}
	c := e.handedOut()
	if c == nil {
		built := e.cached() // not kept: inspecting is no hand-out
		c = &built
	}
	info := InfoOf(id, c)
	info.Key, info.Identity = e.key, e.identity
	if e.x != nil {
		info.Fence = e.x.fence
	}
	return info
}
