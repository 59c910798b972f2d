package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

func Example() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	d := dispatcher.New(engine)

	runs := 0
	d.Register("greet", func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		var p struct {
			Name string `json:"name"`
		}
		if err := req.Decode(&p); err != nil {
			return dispatcher.Response{}, err
		}
		if strings.TrimSpace(p.Name) == "" {
			return dispatcher.Response{}, dispatcher.Errorf(http.StatusBadRequest, "invalid_name", "name must not be empty")
		}
		runs++
		return dispatcher.Response{Status: http.StatusCreated, Data: map[string]any{"greeting": "hello " + p.Name, "run": runs}}, nil
	})

	ctx := context.Background()
	send := func(key, payload string) {
		status, body := d.Dispatch(ctx, dispatcher.Command{
			Name: "greet", Key: key, Identity: "alice", Payload: json.RawMessage(payload),
		})
		fmt.Println(status, string(body))
	}
	send("k1", `{"name":"Ada"}`)
	send("k1", `{ "name": "Ada" }`) // a retry: replayed, the handler does not run again
	send("k1", `{"name":"Bob"}`)    // the same key for another payload
	send("", `{"name":"Ada"}`)
	send("k2", `{"name":""}`) // the handler's own 4xx: recorded like a success
	fmt.Println("runs:", runs)
	// Output:
	// 201 {"ok":true,"data":{"greeting":"hello Ada","run":1}}
	// 201 {"ok":true,"data":{"greeting":"hello Ada","run":1}}
	// 422 {"ok":false,"error":{"code":"idempotency_key_reused","message":"this idempotency key was already used for a different command or payload"}}
	// 400 {"ok":false,"error":{"code":"idempotency_key_missing","message":"this command needs an Idempotency-Key header"}}
	// 400 {"ok":false,"error":{"code":"invalid_name","message":"name must not be empty"}}
	// runs: 1
}
