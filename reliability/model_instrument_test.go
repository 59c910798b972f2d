package reliability

import (
	"fmt"
	"hash/fnv"

	"github.com/anishathalye/porcupine"

	"github.com/idemkit/idempotency"
)

// Op is the kind of a claim-protocol call recorded in a History.
type Op uint8

// The calls a History records.
const (
	OpBegin Op = iota + 1
	OpComplete
	OpRelease
	OpRenew
	OpLookup
)

// String returns the call's name: "begin", "complete", and so on.
func (o Op) String() string {
	switch o {
	case OpBegin:
		return "begin"
	case OpComplete:
		return "complete"
	case OpRelease:
		return "release"
	case OpRenew:
		return "renew"
	case OpLookup:
		return "lookup"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Call is the input of one recorded call.
type Call struct {
	// Op is which call it was.
	Op Op
	// Pair names the record, as Pair(key, identity) does; histories are
	// checked pair by pair.
	Pair string
	// Owner is Begin's ClaimRequest.Owner, or the token's owner.
	Owner string
	// Fingerprint is Begin's request fingerprint, or the Fingerprint of
	// the response Complete records ("" means the claim's).
	Fingerprint string
	// Fence is the token's fence (Complete, Release, Renew).
	Fence uint64
	// Body is the WireBody Complete records.
	Body string
}

// Outcome is the output of one recorded call.
type Outcome struct {
	// Unknown marks a call that failed in a way that leaves open whether
	// the store executed it (a timeout, a connection cut mid-call, any
	// ErrStoreUnavailable). The model lets it take effect or not.
	Unknown bool
	// Status is Begin's answer.
	Status idempotency.ClaimStatus
	// Fence is the fence of the token Begin handed out (ClaimAcquired).
	Fence uint64
	// Body is the WireBody of a replayed record (Begin) or of a hit (Lookup).
	Body string
	// Hit reports that Lookup found a record.
	Hit bool
	// LeaseLost reports that Complete, Release or Renew returned ErrLeaseLost.
	LeaseLost bool
}

type phase uint8

const (
	absent phase = iota
	inFlight
	completed
)

// claimState is the model's state of one record; comparable, so that
// porcupine can compare states with ==.
type claimState struct {
	phase phase
	owner string // the holder, or the token that completed the record
	fence uint64 // the holder's fence; 0 when it is not known yet
	fp    string // the claim's, then the record's fingerprint
	body  string // the recorded WireBody
	floor uint64 // the highest fence known to be handed out for the record
}

func (s claimState) holds(owner string, fence uint64) bool {
	return s.phase == inFlight && s.owner == owner && s.fence == fence
}

func (s claimState) completedBy(owner string, fence uint64) bool {
	return s.phase == completed && s.owner == owner && s.fence == fence
}

// ClaimModel is the porcupine model of one record under the claim protocol
// of idempotency.ClaimStore, for histories whose leases and TTLs do not run
// out while they are recorded (lease expiry is tested elsewhere, in real
// time). Histories are partitioned by Call.Pair.
//
// It checks, for every linearization point: Begin acquires an absent record
// with a fence greater than every fence handed out before for it, gives its
// own token back to a retried Begin of the holder, answers InFlight to anyone
// else and Replay (with the recorded body) once completed, and Mismatch
// exactly when both fingerprints are known and differ (changing nothing);
// Complete, Release and Renew succeed only for the holder's token (and a
// repeated Complete for the token that completed the record), ErrLeaseLost
// otherwise; Lookup hits exactly the completed records. A call whose
// outcome is unknown may or may not have taken effect.
func ClaimModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byPair := make(map[string][]porcupine.Operation)
			var order []string
			for _, op := range history {
				p := op.Input.(Call).Pair
				if _, ok := byPair[p]; !ok {
					order = append(order, p)
				}
				byPair[p] = append(byPair[p], op)
			}
			out := make([][]porcupine.Operation, 0, len(order))
			for _, p := range order {
				out = append(out, byPair[p])
			}
			return out
		},
		Init: func() []any { return []any{claimState{}} },
		Step: func(state, input, output any) []any {
			return step(state.(claimState), input.(Call), output.(Outcome))
		},
		Hash: func(state any) uint64 {
			s := state.(claimState)
			h := fnv.New64a()
			fmt.Fprintf(h, "%d|%s|%d|%s|%s|%d", s.phase, s.owner, s.fence, s.fp, s.body, s.floor)
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string {
			return describe(input.(Call), output.(Outcome))
		},
		DescribeState: func(state any) string {
			s := state.(claimState)
			return fmt.Sprintf("%v owner=%s fence=%d fp=%s body=%q floor=%d",
				[]string{"absent", "in flight", "completed"}[s.phase], s.owner, s.fence, s.fp, s.body, s.floor)
		},
	}
	return nm.ToModel()
}

func describe(c Call, o Outcome) string {
	var out string
	switch {
	case o.Unknown:
		out = "unknown"
	case c.Op == OpBegin:
		out = o.Status.String()
		if o.Status == idempotency.ClaimAcquired {
			out += fmt.Sprintf(" fence=%d", o.Fence)
		}
		if o.Status == idempotency.ClaimReplay {
			out += fmt.Sprintf(" %q", o.Body)
		}
	case c.Op == OpLookup && o.Hit:
		out = fmt.Sprintf("hit %q", o.Body)
	case c.Op == OpLookup:
		out = "miss"
	case o.LeaseLost:
		out = "lease lost"
	default:
		out = "ok"
	}
	switch c.Op {
	case OpBegin:
		return fmt.Sprintf("begin(%s, fp=%s) → %s", c.Owner, c.Fingerprint, out)
	case OpComplete:
		return fmt.Sprintf("complete(%s/%d, %q) → %s", c.Owner, c.Fence, c.Body, out)
	case OpLookup:
		return "lookup → " + out
	}
	return fmt.Sprintf("%v(%s/%d) → %s", c.Op, c.Owner, c.Fence, out)
}

func mismatch(stored, req string) bool { return stored != "" && req != "" && stored != req }

// step returns the states s can move to by c answering o; none when that
// answer is impossible.
func step(s claimState, c Call, o Outcome) []any {
	if o.Unknown {
		next := []any{s}
		if e, ok := effect(s, c); ok && e != s {
			next = append(next, e)
		}
		return next
	}
	switch c.Op {
	case OpBegin:
		return begin(s, c, o)
	case OpComplete:
		switch {
		case !o.LeaseLost && s.holds(c.Owner, c.Fence):
			e, _ := effect(s, c)
			return []any{e}
		case !o.LeaseLost && s.completedBy(c.Owner, c.Fence):
			return []any{s}
		case o.LeaseLost && !s.holds(c.Owner, c.Fence) && !s.completedBy(c.Owner, c.Fence):
			return []any{s}
		}
	case OpRelease, OpRenew:
		if o.LeaseLost != s.holds(c.Owner, c.Fence) {
			e, _ := effect(s, c)
			return []any{e}
		}
	case OpLookup:
		if o.Hit == (s.phase == completed) && (!o.Hit || o.Body == s.body) {
			return []any{s}
		}
	}
	return nil
}

func begin(s claimState, c Call, o Outcome) []any {
	want := idempotency.ClaimAcquired
	switch {
	case s.phase == absent:
	case mismatch(s.fp, c.Fingerprint):
		want = idempotency.ClaimMismatch
	case s.phase == completed:
		want = idempotency.ClaimReplay
	case s.owner != c.Owner:
		want = idempotency.ClaimInFlight
	}
	if o.Status != want {
		return nil
	}
	switch want {
	case idempotency.ClaimReplay:
		if o.Body != s.body {
			return nil
		}
	case idempotency.ClaimAcquired:
		switch {
		case s.phase == inFlight && s.fence != 0: // the holder's retry: its own token
			if o.Fence != s.fence {
				return nil
			}
			return []any{s}
		case o.Fence <= s.floor:
			return nil
		case s.phase == inFlight: // the holder's retry reveals the fence of a claim whose reply was lost
			s.fence, s.floor = o.Fence, o.Fence
			return []any{s}
		}
		return []any{claimState{phase: inFlight, owner: c.Owner, fence: o.Fence, fp: c.Fingerprint, floor: o.Fence}}
	}
	return []any{s}
}

// effect returns the state after c took effect, when it can change s, for
// a call whose outcome is unknown (or for the known successes of step).
func effect(s claimState, c Call) (claimState, bool) {
	switch c.Op {
	case OpBegin:
		if s.phase == absent {
			// Claimed with a fence the caller never learned; a retried
			// Begin of the same owner reveals it.
			return claimState{phase: inFlight, owner: c.Owner, fp: c.Fingerprint, floor: s.floor}, true
		}
	case OpComplete:
		if s.holds(c.Owner, c.Fence) {
			fp := c.Fingerprint
			if fp == "" {
				fp = s.fp
			}
			return claimState{phase: completed, owner: c.Owner, fence: c.Fence, fp: fp, body: c.Body, floor: s.floor}, true
		}
	case OpRelease:
		if s.holds(c.Owner, c.Fence) {
			return claimState{floor: s.floor}, true
		}
	}
	return s, false
}
