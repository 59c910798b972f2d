package dispatcher

import (
	"bytes"
	"encoding/json"
)

// The wire envelopes of DESIGN §6. Field order is fixed by the structs, so
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

// canonical returns the form of payload that the fingerprint digests, or an
// error when payload is not JSON. It compacts white space; it does not sort
// object keys, so {"a":1,"b":2} and {"b":2,"a":1} count as different
// payloads.
func canonical(payload []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, payload); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
