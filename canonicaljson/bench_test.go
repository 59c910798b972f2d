package canonicaljson_test

import (
	"testing"

	"github.com/idemkit/idempotency/canonicaljson"
)

// Typical payloads: small commands ("gear" is the root package's old
// BenchmarkCanonicalJSONSmall input) and a ~1 KiB order: compact with its
// members in no order, pretty-printed, and with its members sorted.
var benchInputs = []struct{ name, in string }{
	{"small", `{"name":"w","amount":1000,"currency":"eur"}`},
	{"gear", `{"name":"gear","amount":1000,"currency":"EUR","tags":["a","b"]}`},
	{"order1k", `{"order_id":"ord_8f14e45fceea167a5a36dedd4bea2543","customer":{"id":1234567,"email":"jane.doe@example.com","name":"Jane Doe","tier":"gold"},"currency":"EUR","created_at":"2024-05-17T09:31:27Z","items":[{"sku":"WID-001","name":"Widget, small","quantity":3,"unit_price":12.5,"tax_rate":0.19},{"sku":"WID-002","name":"Widget, large","quantity":1,"unit_price":49.99,"tax_rate":0.19},{"sku":"GAD-117","name":"Gadget édition spéciale","quantity":2,"unit_price":7.25,"tax_rate":0.07},{"sku":"ACC-042","name":"Cable, 2 m","quantity":4,"unit_price":3.1,"tax_rate":0.19}],"shipping":{"method":"express","address":{"street":"Hauptstraße 12","city":"Berlin","postcode":"10115","country":"DE"},"cost":5.9},"discount":{"code":"SPRING10","percent":10},"total":113.71,"amount_minor":11371,"metadata":{"source":"checkout-web","campaign":"spring","ab_bucket":7,"note":"leave at the door, ring twice"},"flags":[true,false,null],"payment":{"method":"card","brand":"visa","last4":"4242","token":"tok_1NvXc2LkdIwHu7ix"}}`},
	{"order1k-indented", `{
  "order_id": "ord_8f14e45fceea167a5a36dedd4bea2543",
  "customer": {
    "id": 1234567,
    "email": "jane.doe@example.com",
    "name": "Jane Doe",
    "tier": "gold"
  },
  "currency": "EUR",
  "created_at": "2024-05-17T09:31:27Z",
  "items": [
    {
      "sku": "WID-001",
      "name": "Widget, small",
      "quantity": 3,
      "unit_price": 12.5,
      "tax_rate": 0.19
    },
    {
      "sku": "WID-002",
      "name": "Widget, large",
      "quantity": 1,
      "unit_price": 49.99,
      "tax_rate": 0.19
    },
    {
      "sku": "GAD-117",
      "name": "Gadget édition spéciale",
      "quantity": 2,
      "unit_price": 7.25,
      "tax_rate": 0.07
    },
    {
      "sku": "ACC-042",
      "name": "Cable, 2 m",
      "quantity": 4,
      "unit_price": 3.1,
      "tax_rate": 0.19
    }
  ],
  "shipping": {
    "method": "express",
    "address": {
      "street": "Hauptstraße 12",
      "city": "Berlin",
      "postcode": "10115",
      "country": "DE"
    },
    "cost": 5.9
  },
  "discount": {
    "code": "SPRING10",
    "percent": 10
  },
  "total": 113.71,
  "amount_minor": 11371,
  "metadata": {
    "source": "checkout-web",
    "campaign": "spring",
    "ab_bucket": 7,
    "note": "leave at the door, ring twice"
  },
  "flags": [
    true,
    false,
    null
  ],
  "payment": {
    "method": "card",
    "brand": "visa",
    "last4": "4242",
    "token": "tok_1NvXc2LkdIwHu7ix"
  }
}`},
	{"order1k-sorted", `{"amount_minor":11371,"created_at":"2024-05-17T09:31:27Z","currency":"EUR","customer":{"email":"jane.doe@example.com","id":1234567,"name":"Jane Doe","tier":"gold"},"discount":{"code":"SPRING10","percent":10},"flags":[true,false,null],"items":[{"name":"Widget, small","quantity":3,"sku":"WID-001","tax_rate":0.19,"unit_price":12.5},{"name":"Widget, large","quantity":1,"sku":"WID-002","tax_rate":0.19,"unit_price":49.99},{"name":"Gadget édition spéciale","quantity":2,"sku":"GAD-117","tax_rate":0.07,"unit_price":7.25},{"name":"Cable, 2 m","quantity":4,"sku":"ACC-042","tax_rate":0.19,"unit_price":3.1}],"metadata":{"ab_bucket":7,"campaign":"spring","note":"leave at the door, ring twice","source":"checkout-web"},"order_id":"ord_8f14e45fceea167a5a36dedd4bea2543","payment":{"brand":"visa","last4":"4242","method":"card","token":"tok_1NvXc2LkdIwHu7ix"},"shipping":{"address":{"city":"Berlin","country":"DE","postcode":"10115","street":"Hauptstraße 12"},"cost":5.9,"method":"express"},"total":113.71}`},
}

// BenchmarkAppend appends into a reused buffer, as idemhttp does.
func BenchmarkAppend(b *testing.B) {
	for _, bi := range benchInputs {
		in := []byte(bi.in)
		b.Run(bi.name, func(b *testing.B) {
			buf := make([]byte, 0, 2*len(in))
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = canonicaljson.Append(buf[:0], in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCanonical allocates its result, as the dispatcher does.
func BenchmarkCanonical(b *testing.B) {
	for _, bi := range benchInputs {
		in := []byte(bi.in)
		b.Run(bi.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := canonicaljson.Canonical(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendRFC8785 is BenchmarkAppend for the RFC 8785 form.
func BenchmarkAppendRFC8785(b *testing.B) {
	for _, bi := range benchInputs {
		in := []byte(bi.in)
		b.Run(bi.name, func(b *testing.B) {
			buf := make([]byte, 0, 2*len(in))
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = canonicaljson.AppendRFC8785(buf[:0], in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
