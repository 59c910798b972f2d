package idemgin_test

import (
	"net/http"
	"net/http/httptest"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
	"github.com/labstack/echo/v4"
)

// echo takes idemhttp's middleware through echo.WrapMiddleware. Echo
// renders an error a handler returns only after the middleware has
// returned, too late to be recorded (the client would get an empty 200,
// and so would every retry): the middleware after it answers the error in
// place.
func Example_echo() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	e := echo.New()
	e.Use(echo.WrapMiddleware(idemhttp.New(engine)))
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := next(c); err != nil {
				c.Error(err) // answered now, so recorded and replayed
			}
			return nil
		}
	})
	e.POST("/orders/:id/pay", func(c echo.Context) error {
		if c.Param("id") == "o-0" {
			return echo.NewHTTPError(http.StatusNotFound, "no such order")
		}
		return c.String(http.StatusCreated, "paid "+c.Param("id"))
	})

	srv := httptest.NewServer(e)
	defer srv.Close()
	postTwice(srv.URL+"/orders/o-7/pay", "k1")
	postTwice(srv.URL+"/orders/o-0/pay", "k2")
	// Output:
	// 201 Created paid o-7 replayed: false
	// 201 Created paid o-7 replayed: true
	// 404 Not Found {"message":"no such order"} replayed: false
	// 404 Not Found {"message":"no such order"} replayed: true
}
