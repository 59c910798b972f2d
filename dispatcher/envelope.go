package dispatcher

import (
	"encoding/json"

	"github.com/idemkit/idempotency"
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
// RFC 8785 canonical form, so white space, member order and number spelling
// do not make two payloads differ. It fails for text that is not JSON, or that
// has no canonical form (a duplicate member name, invalid UTF-8).
func canonical(payload []byte) ([]byte, error) {
	return idempotency.CanonicalJSON(payload)
}
