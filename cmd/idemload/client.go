package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// outcome classifies one answer.
type outcome int

const (
	executed outcome = iota // 2xx
	replayed                // 2xx with Idempotent-Replayed: true
	conflict                // 409: the key's first request is still running
	failed                  // any other status, or no answer
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"executed", "replayed", "conflict", "error"}

func (o outcome) String() string { return outcomeNames[o] }

// answer is what one request got.
type answer struct {
	outcome outcome
	body    uint64 // hash of a 2xx body, to compare replays with the first answer
	errKind string // for failed: "status 503", "transport", …
}

// client sends commands to one idemd.
type client struct {
	hc      *http.Client
	target  string // URL of the command
	list    string // URL of widgets.list
	auth    string
	payload []byte
	timeout time.Duration
	seed    maphash.Seed
}

func newClient(cfg config) *client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: loopbackOnly}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConns:        cfg.workers,
		MaxIdleConnsPerHost: cfg.workers,
		MaxConnsPerHost:     cfg.workers,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	base := cfg.url.String() + "/v1/commands/"
	return &client{
		hc:      &http.Client{Transport: tr},
		target:  base + cfg.command,
		list:    base + "widgets.list",
		auth:    "Bearer " + cfg.token,
		payload: cfg.payload,
		timeout: cfg.timeout,
		seed:    maphash.MakeSeed(),
	}
}

// loopbackOnly refuses to connect to anything but a loopback address, whatever
// a host name resolved to.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to connect to %s: not a loopback address", address)
	}
	return nil
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// send posts the command with key and classifies the answer.
func (c *client) send(ctx context.Context, key string) answer {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.target, bytes.NewReader(c.payload))
	if err != nil {
		return answer{outcome: failed, errKind: "request"}
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Authorization"] = []string{c.auth}
	req.Header["Idempotency-Key"] = []string{key}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return answer{outcome: failed, errKind: "timeout"}
		}
		return answer{outcome: failed, errKind: "transport"}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return answer{outcome: failed, errKind: "reading the body"}
	case resp.StatusCode == http.StatusConflict:
		return answer{outcome: conflict}
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return answer{outcome: failed, errKind: "status " + strconv.Itoa(resp.StatusCode)}
	}
	a := answer{outcome: executed, body: maphash.Bytes(c.seed, body)}
	if resp.Header.Get("Idempotent-Replayed") == "true" {
		a.outcome = replayed
	}
	return a
}

// widgetCount returns widgets.list's data.count.
func (c *client) widgetCount(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.list, bytes.NewReader([]byte(`{}`)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", c.auth)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	var env struct {
		OK   bool `json:"ok"`
		Data struct {
			Count *int64 `json:"count"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return 0, fmt.Errorf("decoding the answer: %w", err)
	}
	if !env.OK || env.Data.Count == nil {
		return 0, fmt.Errorf("answer without data.count: %.200s", body)
	}
	return *env.Data.Count, nil
}
