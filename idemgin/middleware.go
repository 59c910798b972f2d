package idemgin

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// New returns gin middleware that makes the rest of the handler chain
// idempotent on e, with idemhttp's semantics and options:
//
//	engine := idempotency.NewEngine(store, idempotency.WithDetachedRun(true))
//	r := gin.New()
//	r.Use(gin.Recovery(), authenticate)
//	r.POST("/payments", idemgin.New(engine), createPayment)
//
// It is idemhttp.New(e, opts...) around the chain: the handlers after it
// (c.Next) are the http.Handler the idemhttp middleware wraps. While they
// run, c.Writer records what they write (c.JSON, c.String, c.Status, …)
// and c.Request is the request with its body restored (c.ShouldBindJSON
// reads it again) and detached from the client; both are put back when the
// chain returns. When the middleware answers by itself — a replay, a 409,
// 422 or any other refusal — the chain does not run and c is aborted.
//
// Middleware that answers for the handlers after they return (an error
// renderer reading c.Errors, for example) must come after New in the
// chain, or its answer is neither recorded nor replayed.
//
// New panics if e is nil, or if e may run a command more than once (a
// TxStore, see Engine.Reruns): a gin chain cannot run twice. Over such an
// engine wrap the handler itself: gin.WrapH(idemhttp.New(e)(h)).
func New(e *idempotency.Engine, opts ...idemhttp.Option) gin.HandlerFunc {
	switch {
	case e == nil:
		panic("idemgin: New with a nil engine")
	case e.Reruns():
		panic("idemgin: New with an engine that reruns commands; a gin chain runs once")
	}
	mw := idemhttp.New(e, opts...)
	return func(c *gin.Context) {
		ch := &chain{c: c}
		mw(ch).ServeHTTP(c.Writer, c.Request)
		if !ch.ran {
			c.Abort()
		}
	}
}

// chain is the rest of a gin chain as the http.Handler idemhttp runs, and
// the writer its handlers write to, in one allocation.
type chain struct {
	c   *gin.Context
	w   responseWriter
	ran bool
}

func (ch *chain) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := ch.c
	ch.ran = true
	if r == c.Request {
		// Passed straight through (no key, or a method not covered): a
		// keyed request's handler gets a request of its own.
		c.Next()
		return
	}
	outerW, outerR := c.Writer, c.Request
	defer func() { c.Writer, c.Request = outerW, outerR }() // also when a handler panics
	ch.w.reset(w)
	c.Writer, c.Request = &ch.w, r
	c.Next()
	ch.w.WriteHeaderNow() // a status set and nothing written, as gin itself ends a chain
}
