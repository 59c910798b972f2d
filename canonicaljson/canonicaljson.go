// Package canonicaljson writes JSON texts in a canonical form, so that two
// texts holding the same data can be compared, or hashed, byte for byte.
//
// Append and Canonical write the exact-value form that request
// fingerprints are built on. Its one rule is that two texts canonicalize to
// the same bytes exactly when they hold the same data, numbers compared by
// their exact decimal value: a fingerprint may tell two spellings of one
// request apart (a spurious mismatch), but must never make two different
// requests equal. The form is:
//
//   - no white space between tokens;
//   - object members sorted by their names' bytes (UTF-8, which is code
//     point order);
//   - strings written with escapes only where JSON requires them: \" \\ \b
//     \f \n \r \t and \u00xx for the other control characters; everything
//     else, "/" and non-ASCII text included, as itself (UTF-8), so "\u0041"
//     and "A" are one string;
//   - numbers by their exact decimal value, however many digits they
//     have: a minus sign if negative, then the significant digits (no
//     leading or trailing zeros) written as an integer, with at most 20
//     trailing zeros; or as a decimal fraction, with at most 20 zeros
//     between the point and the first significant digit; or else as an
//     integer followed by "e" and the exponent. So 1, 1.0, 1e0 and 10e-1
//     are all 1; 1e2 is 100; 1.50 and 15e-1 are 1.5; 2e-3 is 0.002; 1e21 is
//     1e21, 1.5e300 is 15e299 and 1e-22 is 1e-22; and 1234567890123456789
//     and 1234567890123456788 stay apart. Zero is 0: -0, 0.0 and 0e5 all
//     have the exact value 0 (JSON gives -0 no meaning of its own, and a
//     decoder into an integer or a decimal reads it as 0). Integers and
//     decimal fractions keep the spelling payloads usually give them;
//   - true, false and null as themselves.
//
// The form is itself JSON, and canonical: canonicalizing it again changes
// nothing.
//
// Some texts have no canonical form, and Append and Canonical return an
// error for them: text that is not JSON (RFC 8259); an object with two
// members of the same name (compared after unescaping), whose meaning
// depends on the reader; invalid UTF-8 or an unpaired surrogate escape; a
// number whose exponent is beyond ±1e9, as written or once its digits are
// normalized (10e1000000000 is 1e1000000001): no payload needs one, and a
// reader that expands such a number can be made to allocate without limit;
// and nesting deeper than 10000 levels. A caller that must still
// compare such a text compares its raw bytes, tagged so that they can never
// equal a canonical form: that can only tell spellings of one request
// apart, never make two requests equal.
//
// AppendRFC8785 and RFC8785 write the form of RFC 8785 (the JSON
// Canonicalization Scheme) instead, for interoperating with signatures and
// hashes computed elsewhere. It reads numbers as IEEE 754 doubles, so
// numbers that round to the same double (1234567890123456789 and
// 1234567890123456788) share a form: it must not be used for fingerprints.
package canonicaljson

// Canonical returns the exact-value canonical form of the JSON text data
// (see the package documentation), or an error when data has none.
func Canonical(data []byte) ([]byte, error) {
	return Append(make([]byte, 0, len(data)), data)
}

// Append appends the exact-value canonical form of data (see Canonical) to
// dst and returns the extended buffer. On an error it returns dst, its
// length unchanged (bytes past that length may have been overwritten), and
// the error. With a reused dst it allocates nothing for most inputs.
func Append(dst, data []byte) ([]byte, error) {
	return run(data, dst, exact)
}
