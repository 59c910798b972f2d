package idemgin_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgin"
)

// A retried POST runs the gin handler once; the retry gets the recorded
// response, marked with Idempotent-Replayed.
func ExampleNew() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	charges := 0
	r := gin.New()
	r.POST("/charges", idemgin.New(engine), func(c *gin.Context) {
		var req struct {
			Amount int `json:"amount"`
		}
		if err := c.ShouldBindJSON(&req); err != nil { // the body is there for the handler
			c.JSON(http.StatusBadRequest, gin.H{"error": "bad request"})
			return
		}
		charges++
		c.Header("Location", "/charges/ch_1")
		c.JSON(http.StatusCreated, gin.H{"id": "ch_1", "amount": req.Amount})
	})

	srv := httptest.NewServer(r)
	defer srv.Close()
	postTwice(srv.URL+"/charges", "order-42")
	fmt.Println("charges:", charges)
	// Output:
	// 201 Created {"amount":1000,"id":"ch_1"} replayed: false
	// 201 Created {"amount":1000,"id":"ch_1"} replayed: true
	// charges: 1
}

// postTwice sends one POST with key and its retry, and prints the answers.
func postTwice(url, key string) {
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"amount":1000}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Authorization", "Bearer customer-7") // the caller
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			panic(err)
		}
		fmt.Println(resp.Status, strings.TrimSpace(string(body)), "replayed:", resp.Header.Get("Idempotent-Replayed") == "true")
	}
}
