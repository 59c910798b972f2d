package redisrec

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

func TestPattern(t *testing.T) {
	cases := []struct{ prefix, want string }{
		{"", "{*}"},
		{"idem:", "idem:{*}"},
		{`t[1]*?\:`, `t\[1\]\*\?\\:{*}`},
	}
	for _, tc := range cases {
		if got := Pattern(tc.prefix); got != tc.want {
			t.Errorf("Pattern(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func TestIDAndKey(t *testing.T) {
	h := driver.NewRecordHasher([]byte("s"))
	id := ID(h, "k", "alice")
	key, err := KeyOfID("p:", id)
	if err != nil {
		t.Fatalf("KeyOfID(ID) = %v", err)
	}
	if want := Key(h, "p:", "k", "alice"); key != want {
		t.Fatalf("KeyOfID(ID) = %q, want the record's key %q", key, want)
	}
	if got, ok := IDOfKey("p:", key); !ok || got != id {
		t.Errorf("IDOfKey(%q) = (%q, %v), want (%q, true)", key, got, ok, id)
	}
	for _, bad := range []string{"", "x", strings.ToUpper(id), id + "0", id[1:], strings.Repeat("g", IDLen)} {
		if _, err := KeyOfID("p:", bad); !errors.Is(err, idempotency.ErrInvalidArgument) {
			t.Errorf("KeyOfID(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	for _, k := range []string{"q:{" + id + "}", "p:" + id, "p:{" + id + "}x", "p:{" + strings.ToUpper(id) + "}", "p:{}", "p:"} {
		if got, ok := IDOfKey("p:", k); ok {
			t.Errorf("IDOfKey(%q) = %q, want not a record", k, got)
		}
	}
}

func TestInfo(t *testing.T) {
	const now = int64(1_700_000_000_000_000)
	claim := func(fence uint64, until int64) string {
		f, u := FenceBytes(fence), FenceBytes(uint64(until))
		return "F" + string(f[:]) + string(u[:]) + "\x00\x00\x00\x05owner" + "\x00\x00\x00\x02fp"
	}
	info, err := Info("id", claim(uint64(now-2e6), now+3e6), now)
	want := idempotency.RecordInfo{ID: "id", State: idempotency.RecordInFlight, Fence: uint64(now - 2e6), Owner: "owner",
		Fingerprint: "fp", ClaimedAt: time.UnixMicro(now - 2e6), LeaseLeft: 3 * time.Second}
	if err != nil || info != want {
		t.Errorf("Info(claim) = (%+v, %v), want %+v", info, err, want)
	}
	for name, v := range map[string]string{"none": "", "lease ran out": claim(1, now), "released": claim(1, 0)} {
		if info, err := Info("id", v, now); err != nil || info != (idempotency.RecordInfo{ID: "id"}) {
			t.Errorf("Info(%s) = (%+v, %v), want absent", name, info, err)
		}
	}
	for _, v := range []string{"X", "F", claim(1, now+1)[:FixedLen+2], "Xgarbage-garbage-garbage-garbage"} {
		if info, err := Info("id", v, now); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Info(%q) = (%+v, %v), want ErrCorrupt", v, info, err)
		}
	}
}

func TestClaimScan(t *testing.T) {
	const now = int64(1_700_000_000_000_000)
	h := driver.NewRecordHasher(nil)
	claim := func(fence uint64) string {
		f, u := FenceBytes(fence), FenceBytes(uint64(now+1e6))
		return "F" + string(f[:]) + string(u[:]) + "\x00\x00\x00\x01o\x00\x00\x00\x00"
	}
	scan := NewClaimScan("p:", time.Second)
	a, b, young := ID(h, "a", ""), ID(h, "b", ""), ID(h, "young", "")
	scan.Add("p:{"+b+"}", claim(uint64(now-2e6)), now)
	scan.Add("p:{"+a+"}", claim(uint64(now-3e6)), now)
	scan.Add("p:{"+young+"}", claim(uint64(now-1e5)), now)
	scan.Add("q:{"+a+"}", claim(1), now)      // another prefix
	scan.Add("p:{"+a+"}", "garbage", now)     // not a record
	scan.Add("p:{"+a+"}", claim(1)[:20], now) // not a whole one
	got := scan.Claims(0)
	if len(got) != 2 || got[0].ID != a || got[1].ID != b {
		t.Fatalf("Claims = %+v, want a's claim, then b's", got)
	}
	if got := scan.Claims(1); len(got) != 1 || got[0].ID != a {
		t.Errorf("Claims(limit 1) = %+v, want a's claim", got)
	}
}
