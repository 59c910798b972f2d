package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// sidecarConfig is the sidecar part of config.
type sidecarConfig struct {
	upstream        string
	methods         []string
	paths           []string
	identity        string // "authorization" or "header:NAME"
	anonymous       bool
	requireKey      bool
	ambiguous       string // "record" or "release"
	upstreamTimeout time.Duration
	noReplay        []string // more response headers never replayed
}

func (c *sidecarConfig) validate() error {
	u, err := url.Parse(c.upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-upstream %q: want an http:// or https:// URL", c.upstream)
	}
	for _, m := range c.methods {
		switch m {
		case "":
			return errors.New("-methods: empty method")
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
			// Go's Transport re-sends these on its own; they need no key.
			return fmt.Errorf("-methods %s: a safe method cannot be covered", m)
		}
	}
	for _, p := range c.paths {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("-paths %q: a path prefix starts with /", p)
		}
	}
	if c.identity != "authorization" && (!strings.HasPrefix(c.identity, "header:") || len(c.identity) == len("header:")) {
		return fmt.Errorf("-identity %q: want authorization or header:NAME", c.identity)
	}
	if c.ambiguous != "record" && c.ambiguous != "release" {
		return fmt.Errorf("-upstream-ambiguous %q: want record or release", c.ambiguous)
	}
	if c.upstreamTimeout <= 0 {
		return fmt.Errorf("-upstream-timeout %v: must be positive", c.upstreamTimeout)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
