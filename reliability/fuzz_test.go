package reliability

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/idemhttp"
	"github.com/idemkit/idempotency/pgstore"
)

// sfQuote writes key as an RFC 8941 sf-string.
func sfQuote(key string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// FuzzKeyHeader feeds Idempotency-Key header values to both key parsers,
// the dispatcher's (through ServeHTTP, as idemd receives them) and
// idemhttp.ParseKey: neither panics; a key either accepts passes
// ValidateKey; a printable ASCII key round-trips through its sf-string
// form; the two parsers agree (except on the known issue BARE-LIST:
// the dispatcher takes a bare value with a comma or a double quote as one
// key); and ParseKey allocates no more than a few times the input's size
// (checked without the race detector, which changes allocations).
func FuzzKeyHeader(f *testing.F) {
	for _, s := range []string{`"abc"`, `abc`, `"a\"b\\c"`, `"a", "b"`, ` x `, `"`, `"\`, "a\x00", `""`, ``,
		strings.Repeat("k", 256), `"caf` + "\u00e9" + `"`, "caf\u00e9", "\xff", `"k";p=1`, "a\tb", `"a b"`} {
		f.Add(s)
	}
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("echo", func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		return dispatcher.Response{Data: req.Key}, nil
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/commands/{name}", d)
	// dispatcherKey returns the key the dispatcher ran the command with, or
	// false when it refused the header.
	dispatcherKey := func(t *testing.T, v string) (string, bool) {
		r := httptest.NewRequest(http.MethodPost, "/v1/commands/echo", strings.NewReader(`{}`))
		r.Header["Idempotency-Key"] = []string{v}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		var env struct {
			OK    bool   `json:"ok"`
			Data  string `json:"data"`
			Error *struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
			t.Fatalf("header %q: answer %q is not an envelope: %v", v, w.Body.String(), err)
		}
		switch {
		case env.OK:
			return env.Data, true
		case w.Code == 400 && env.Error != nil && (env.Error.Code == dispatcher.CodeKeyInvalid || env.Error.Code == dispatcher.CodeKeyMissing):
			return "", false
		}
		t.Fatalf("header %q: %d %s, want a success or 400 for the key", v, w.Code, w.Body.String())
		return "", false
	}
	f.Fuzz(func(t *testing.T, v string) {
		if len(v) > 4096 {
			return
		}
		hk, herr := idemhttp.ParseKey([]string{v})
		if herr != nil && !errors.Is(herr, idempotency.ErrInvalidKey) {
			t.Fatalf("ParseKey(%q): %v does not wrap ErrInvalidKey", v, herr)
		}
		dk, dok := dispatcherKey(t, v)
		for _, k := range []struct {
			who string
			key string
			ok  bool
		}{{"ParseKey", hk, herr == nil}, {"dispatcher", dk, dok}} {
			if !k.ok {
				continue
			}
			if err := idempotency.ValidateKey(k.key); err != nil {
				t.Fatalf("%s(%q) = %q, which ValidateKey refuses: %v", k.who, v, k.key, err)
			}
			if printableASCII(k.key) {
				if again, err := idemhttp.ParseKey([]string{sfQuote(k.key)}); err != nil || again != k.key {
					t.Fatalf("ParseKey(quote(%q)) = %q, %v; want the key back", k.key, again, err)
				}
				if again, ok := dispatcherKey(t, sfQuote(k.key)); !ok || again != k.key {
					t.Fatalf("dispatcher(quote(%q)) = %q, %v; want the key back", k.key, again, ok)
				}
			}
		}
		bareListOrQuote := !strings.HasPrefix(strings.Trim(v, " \t"), `"`) && strings.ContainsAny(v, `,"`)
		if (herr == nil) != dok || (dok && hk != dk) {
			if !(dok && herr != nil && bareListOrQuote) {
				t.Fatalf("header %q: ParseKey = (%q, %v), dispatcher = (%q, %v): the parsers disagree", v, hk, herr, dk, dok)
			}
		}
		if raceEnabled {
			return
		}
		values := []string{v}
		if n := allocated(func() {
			for range 10 {
				_, _ = idemhttp.ParseKey(values)
			}
		}) / 10; n > uint64(4*len(v)+4096) {
			t.Fatalf("ParseKey(%d bytes) allocates %d bytes", len(v), n)
		}
	})
}

// FuzzRecordKeyKeyed checks that with a secret, as without, two distinct
// (key, identity) pairs never share a record name, and that the name
// depends on the secret.
func FuzzRecordKeyKeyed(f *testing.F) {
	f.Add("a:b", "c", "a", "b:c", []byte("s"))
	f.Add("ab", "", "a", "b", []byte{0})
	f.Add("k", "i", "k", "i", []byte("x"))
	f.Fuzz(func(t *testing.T, k1, i1, k2, i2 string, secret []byte) {
		if len(secret) == 0 {
			secret = []byte{1}
		}
		h1, h2 := driver.RecordKey(secret, k1, i1), driver.RecordKey(secret, k2, i2)
		if (h1 == h2) != (k1 == k2 && i1 == i2) {
			t.Fatalf("(%q, %q) and (%q, %q) under secret %x: names equal = %v", k1, i1, k2, i2, secret, h1 == h2)
		}
		other := bytes.Clone(secret) // not secret+"\x00": HMAC pads short keys with zeros
		other[len(other)-1] ^= 1
		if h1 == driver.RecordKey(other, k1, i1) || h1 == driver.RecordKey(nil, k1, i1) {
			t.Fatalf("the name of (%q, %q) does not depend on the secret", k1, i1)
		}
	})
}

// FuzzRecordRoundTrip stores fuzzed responses in every store and reads
// them back: what a store accepts, Lookup returns unchanged (status, body,
// headers, fingerprint, tombstone, TTL).
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add(201, []byte(`{"ok":true}`), "Location", "/w/1", "fp", false, uint16(60))
	f.Add(0, []byte(nil), "", "", "", true, uint16(0))
	f.Add(599, []byte{0, 0xff, '\n'}, "X-\u00e9", "v\x00", "\xff", false, uint16(1))
	fixtures := []*fixture{newFixture(f, memoryBackend), newFixture(f, redisBackend), newFixture(f, postgresBackend)}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, status int, body []byte, hname, hval, fp string, tombstone bool, ttl uint16) {
		c := idempotency.Cached{Status: status, WireBody: body, Fingerprint: fp, Tombstone: tombstone,
			TTL: time.Duration(ttl)*time.Second + time.Hour}
		if hname != "" {
			c.Header = map[string][]string{hname: {hval, hval + "2"}}
		}
		key := fmt.Sprintf("rt-%d", n.Add(1))
		for _, fx := range fixtures {
			ctx := context.Background()
			if err := fx.store.Store(ctx, key, "id", c); err != nil {
				continue // refused (too large, invalid): fine, as long as nothing panicked
			}
			got, ok := fx.store.Lookup(ctx, key, "id")
			if !ok {
				t.Fatalf("%s: Store(%+v) succeeded, Lookup missed", fx.name, c)
			}
			same := got.Status == c.Status && bytes.Equal(got.WireBody, c.WireBody) && got.Fingerprint == c.Fingerprint &&
				got.Tombstone == c.Tombstone && got.TTL == c.TTL && len(got.Header) == len(c.Header)
			for k, vs := range c.Header {
				same = same && strings.Join(got.Header[k], "\x00") == strings.Join(vs, "\x00")
			}
			if !same {
				t.Fatalf("%s: stored %+v, read back %+v", fx.name, c, *got)
			}
		}
	})
}

// allocated returns how many bytes fn allocated.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// corruptBound is the most a store may allocate to read a corrupt record of
// a few hundred bytes: a length field claiming gigabytes must not be
// believed.
const corruptBound = 16 << 20

// mutations returns seeds derived from a valid encoding: every prefix, and
// the encoding with each byte set to 0x00, 0x7f and 0xff (the latter two
// turn length and count fields into huge varints).
func mutations(valid []byte) [][]byte {
	var out [][]byte
	for i := range valid {
		out = append(out, valid[:i])
		for _, b := range []byte{0x00, 0x7f, 0xff} {
			m := bytes.Clone(valid)
			m[i] = b
			out = append(out, m)
		}
	}
	return out
}

// FuzzCorruptRedisRecord writes fuzzed bytes in place of a Redis record
// (seeded with every truncation and byte mutation of a valid one) and reads
// it through the store: Lookup and Begin must neither panic nor allocate
// more than corruptBound, whatever the record's length fields claim.
func FuzzCorruptRedisRecord(f *testing.F) {
	fx := newFixture(f, redisBackend)
	ctx := context.Background()
	c := idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true}`), Fingerprint: "fp",
		Header: map[string][]string{"Location": {"/w/1"}, "X-Many": {"a", "b"}}}
	if err := fx.store.Store(ctx, "valid", "id", c); err != nil {
		f.Fatal(err)
	}
	sum := driver.RecordKey(nil, "valid", "id")
	name := fx.prefix + "{" + hex.EncodeToString(sum[:]) + "}"
	valid, err := fx.rdb.Get(ctx, name).Bytes()
	if err != nil {
		f.Fatalf("reading the record at %s (has the key layout changed?): %v", name, err)
	}
	for _, m := range mutations(valid) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := fx.rdb.Set(ctx, name, data, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if n := allocated(func() { fx.store.Lookup(ctx, "valid", "id") }); n > corruptBound {
			t.Fatalf("Lookup of a %d-byte record allocated %d bytes", len(data), n)
		}
		if n := allocated(func() {
			_, _ = fx.store.Begin(ctx, "valid", "id", idempotency.ClaimRequest{Owner: "o", Fingerprint: "fp", Lease: time.Second})
		}); n > corruptBound {
			t.Fatalf("Begin on a %d-byte record allocated %d bytes", len(data), n)
		}
	})
}

// FuzzCorruptPostgresHeader writes fuzzed bytes in place of a PostgreSQL
// record's encoded headers (seeded with every truncation and byte mutation
// of valid ones) and reads the record through the store: Lookup and Begin
// must neither panic nor allocate more than corruptBound.
func FuzzCorruptPostgresHeader(f *testing.F) {
	fx := newFixture(f, postgresBackend)
	ctx := context.Background()
	c := idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true}`), Fingerprint: "fp",
		Header: map[string][]string{"Location": {"/w/1"}, "X-Many": {"a", "b"}}}
	if err := fx.store.Store(ctx, "valid", "id", c); err != nil {
		f.Fatal(err)
	}
	sum := driver.RecordKey(nil, "valid", "id")
	table := fx.schema + "." + pgstore.DefaultTable
	var valid []byte
	if err := fx.pool.QueryRow(ctx, "SELECT header FROM "+table+" WHERE id = $1", sum[:]).Scan(&valid); err != nil {
		f.Fatalf("reading the record's header (has the schema changed?): %v", err)
	}
	for _, m := range mutations(valid) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := fx.pool.Exec(ctx, "UPDATE "+table+" SET header = $1 WHERE id = $2", data, sum[:]); err != nil {
			t.Fatal(err)
		}
		if n := allocated(func() { fx.store.Lookup(ctx, "valid", "id") }); n > corruptBound {
			t.Fatalf("Lookup of a record with %d header bytes allocated %d bytes", len(data), n)
		}
		if n := allocated(func() {
			_, _ = fx.store.Begin(ctx, "valid", "id", idempotency.ClaimRequest{Owner: "o", Fingerprint: "fp", Lease: time.Second})
		}); n > corruptBound {
			t.Fatalf("Begin on a record with %d header bytes allocated %d bytes", len(data), n)
		}
	})
}
