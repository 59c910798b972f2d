package dispatcher

import (
	"encoding/json"

	"github.com/idemkit/idempotency/canonicaljson"
)

// The wire envelopes of the dashboard contract: {"ok":true,"data":…} and
// {"ok":false,"error":{"code":…,"message":…}}. Field order is fixed by the structs, so
// an answer's bytes depend only on its content.
type okEnvelope struct {
	OK   bool `json:"ok"`
	Data any  `json:"data"`
}

type errEnvelope struct {
	OK    bool      `json:"ok"`
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func dataEnvelope(data any) ([]byte, error) {
	return json.Marshal(okEnvelope{OK: true, Data: data})
}

func errorEnvelope(code, message string) []byte {
	b, _ := json.Marshal(errEnvelope{Error: errorBody{Code: code, Message: message}}) // two strings always marshal
	return b
}

// canonical returns the form of payload that the fingerprint digests: its
// exact-value canonical form (canonicaljson.Append), so white space, member
// order, string escapes and number spelling do not make two payloads
// differ, while numbers that differ in any digit always do. It fails for
// text that is not JSON, or that has no canonical form (a duplicate member
// name, invalid UTF-8, an exponent beyond ±1e9); the dispatcher refuses such
// a payload (invalid_json) rather than fingerprinting its bytes.
//
// The form comes after a tag naming it. Earlier versions digested the RFC
// 8785 form, which reads numbers as doubles: a record made then for
// 12345678901234567 holds the digest of 12345678901234568, and without the
// tag a new payload 12345678901234568 would replay it. No JSON text starts
// with the tag's "j", so no old digest can match a new one.
func canonical(payload []byte) ([]byte, error) {
	dst := make([]byte, 0, len(canonicalTag)+len(payload))
	return canonicaljson.Append(append(dst, canonicalTag...), payload)
}

const canonicalTag = "json-exact\x00"
