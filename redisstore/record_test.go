package redisstore

import (
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
)

// completedRecord builds a completed record the way the scripts do.
func completedRecord(fence, until uint64, owner, fp string, stamp uint64, payload []byte) string {
	b := []byte{kindCompleted}
	b = binary.BigEndian.AppendUint64(b, fence)
	b = binary.BigEndian.AppendUint64(b, until)
	b = binary.BigEndian.AppendUint32(b, uint32(len(owner)))
	b = append(b, owner...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(fp)))
	b = append(b, fp...)
	b = binary.BigEndian.AppendUint64(b, stamp)
	return string(append(b, payload...))
}

func TestRecordRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 20, 0, 0, 123456789, time.UTC)
	stamp := time.Date(2026, 11, 26, 21, 0, 0, 654321000, time.UTC)
	cases := []struct {
		name    string
		in      idempotency.Cached
		stamped bool
	}{
		{"body and headers", idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true}`), StoredAt: at, TTL: time.Hour,
			Header: map[string][]string{"Location": {"/w/7"}, "X-Multi": {"a", "", "b"}, "X-Empty": {}}}, false},
		{"stamped", idempotency.Cached{Status: 200, WireBody: []byte("x"), TTL: 24 * time.Hour}, true},
		{"tombstone without body", idempotency.Cached{Status: 200, StoredAt: at, TTL: time.Second, Tombstone: true}, false},
		{"empty non-nil body", idempotency.Cached{Status: 204, WireBody: []byte{}, StoredAt: at, TTL: time.Minute}, false},
		{"negative status, before 1970", idempotency.Cached{Status: -1, StoredAt: time.Date(1901, 1, 1, 0, 0, 0, 1, time.UTC), TTL: 1}, false},
		{"binary body", idempotency.Cached{Status: 200, WireBody: []byte("\x00\xff\x80{}"), StoredAt: at, TTL: time.Hour}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			payload := appendPayload(nil, &tc.in, tc.stamped)
			if n := payloadLen(&tc.in); len(payload) > n {
				t.Errorf("payload is %d bytes, payloadLen promised at most %d", len(payload), n)
			}
			got, err := decodeRecord(completedRecord(7, 8, "owner", "fp", uint64(stamp.UnixMicro()), payload))
			if err != nil {
				t.Fatalf("decodeRecord = %v", err)
			}
			want := tc.in
			want.Fingerprint = "fp"
			if tc.stamped {
				want.StoredAt = stamp
			}
			if got.Status != want.Status || got.TTL != want.TTL || got.Tombstone != want.Tombstone ||
				got.Fingerprint != want.Fingerprint || !got.StoredAt.Equal(want.StoredAt) {
				t.Errorf("decoded %+v, want %+v", got, want)
			}
			if (got.WireBody == nil) != (want.WireBody == nil) || string(got.WireBody) != string(want.WireBody) {
				t.Errorf("WireBody = %q (nil %v), want %q (nil %v)", got.WireBody, got.WireBody == nil, want.WireBody, want.WireBody == nil)
			}
			if (got.Header == nil) != (want.Header == nil) || !maps.EqualFunc(got.Header, want.Header, slices.Equal) {
				t.Errorf("Header = %v, want %v", got.Header, want.Header)
			}
		})
	}
}

func TestDecodeRecordRejectsCorruption(t *testing.T) {
	good := completedRecord(1, 2, "o", "fp", 3, appendPayload(nil, &idempotency.Cached{Status: 200,
		Header: map[string][]string{"A": {"b"}}}, true))
	cases := map[string]string{
		"empty":           "",
		"in flight":       "F" + good[1:],
		"unknown kind":    "Z" + good[1:],
		"short header":    good[:fixedLen+2],
		"owner too long":  good[:fixedLen] + "\xff\xff\xff\xff" + good[fixedLen+4:],
		"no payload":      completedRecord(1, 2, "o", "fp", 3, nil),
		"cut in headers":  good[:len(good)-1],
		"trailing bytes":  good + "x",
		"varint overflow": completedRecord(1, 2, "o", "fp", 3, []byte("\x00"+strings.Repeat("\xff", 11))),
		"header count":    completedRecord(1, 2, "o", "fp", 3, []byte{flagStamped | flagHeader, 0, 0, 0xff, 0x7f}),
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			if got, err := decodeRecord(v); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeRecord = (%+v, %v), want errCorrupt", got, err)
			}
		})
	}
	if _, err := decodeRecord(good); err != nil {
		t.Fatalf("decodeRecord(good) = %v", err)
	}
}

// TestBeginRecord: a completed record that Begin's script replies with is a
// replay unless both fingerprints are set and differ.
func TestBeginRecord(t *testing.T) {
	payload := appendPayload(nil, &idempotency.Cached{Status: 201, WireBody: []byte("b")}, true)
	cases := []struct {
		stored, requested string
		want              idempotency.ClaimStatus
	}{
		{"fp", "fp", idempotency.ClaimReplay},
		{"fp", "", idempotency.ClaimReplay},
		{"", "fp", idempotency.ClaimReplay},
		{"", "", idempotency.ClaimReplay},
		{"fp", "other", idempotency.ClaimMismatch},
		{"fp", "fq", idempotency.ClaimMismatch},
	}
	for _, tc := range cases {
		cl, err := redisrec.BeginRecord(completedRecord(1, 2, "o", tc.stored, 3, payload), tc.requested)
		if err != nil || cl.Status != tc.want {
			t.Errorf("BeginRecord(stored %q, requested %q) = (%v, %v), want %v", tc.stored, tc.requested, cl.Status, err, tc.want)
			continue
		}
		if cl.Status == idempotency.ClaimReplay &&
			(cl.Record == nil || cl.Record.Fingerprint != tc.stored || cl.Record.Status != 201 || string(cl.Record.WireBody) != "b") {
			t.Errorf("BeginRecord(stored %q, requested %q) replays %+v", tc.stored, tc.requested, cl.Record)
		}
	}
	if _, err := redisrec.BeginRecord("C\x00", "fp"); !errors.Is(err, errCorrupt) {
		t.Errorf("BeginRecord of a corrupt record = %v, want errCorrupt", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(completedRecord(1, 2, "o", "fp", 3, appendPayload(nil, &idempotency.Cached{Status: 200, WireBody: []byte("b"),
		Header: map[string][]string{"A": {"b", "c"}}}, false)))
	f.Add("C")
	f.Fuzz(func(t *testing.T, v string) {
		c, err := decodeRecord(v)
		// Begin's decoding, handed the record's own fingerprint, agrees.
		cl, berr := redisrec.BeginRecord(v, "fp")
		if (err == nil) != (berr == nil) ||
			err == nil && (cl.Status == idempotency.ClaimReplay) != (c.Fingerprint == "" || c.Fingerprint == "fp") ||
			cl.Record != nil && (cl.Record.Fingerprint != c.Fingerprint || string(cl.Record.WireBody) != string(c.WireBody)) {
			t.Fatalf("BeginRecord = (%+v, %v), decodeRecord = (%+v, %v)", cl, berr, c, err)
		}
		if err == nil {
			// What decodes re-encodes to a record that decodes the same.
			again, err := decodeRecord(completedRecord(1, 2, "o", c.Fingerprint, 3, appendPayload(nil, c, false)))
			if err != nil || again.Status != c.Status || string(again.WireBody) != string(c.WireBody) || again.TTL != c.TTL {
				t.Fatalf("re-encoded %+v decodes to (%+v, %v)", c, again, err)
			}
		}
	})
}
