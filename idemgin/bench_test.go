package idemgin_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/idemkit/idempotency/idemgin"
	"github.com/idemkit/idempotency/idemhttp"
)

// The gin adapter against idemhttp's own middleware under gin.WrapH, on the
// same handler, in process (no network): what the adapter costs.
func BenchmarkGin(b *testing.B) {
	answer := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"ch_1"}`))
	}
	routers := map[string]func() *gin.Engine{
		"idemgin": func() *gin.Engine {
			r := gin.New()
			r.POST("/", idemgin.New(newEngine()), func(c *gin.Context) { answer(c.Writer) })
			return r
		},
		"WrapH": func() *gin.Engine {
			r := gin.New()
			r.POST("/", gin.WrapH(idemhttp.New(newEngine())(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { answer(w) }))))
			return r
		},
	}
	for _, name := range []string{"idemgin", "WrapH"} {
		for _, mode := range []string{"fresh", "replay"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				r := routers[name]()
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					key := "k"
					if mode == "fresh" {
						i++
						key = strconv.Itoa(i)
					}
					req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"amount":1}`))
					req.Header.Set("Idempotency-Key", key)
					req.Header.Set("Authorization", "Bearer alice")
					rr := httptest.NewRecorder()
					r.ServeHTTP(rr, req)
					if rr.Code != http.StatusCreated {
						b.Fatalf("status %d", rr.Code)
					}
				}
			})
		}
	}
}
