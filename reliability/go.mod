module github.com/idemkit/idempotency/reliability

go 1.26.8

require (
	github.com/anishathalye/porcupine v1.3.1
	github.com/hashicorp/go-retryablehttp v0.7.8
	github.com/idemkit/idempotency v0.0.0-00010101000000-000000000000
	github.com/idemkit/idempotency/pgstore v0.0.0-00010101000000-000000000000
	github.com/idemkit/idempotency/redisstore v0.0.0-00010101000000-000000000000
	github.com/jackc/pgx/v5 v5.12.0
	github.com/redis/go-redis/v9 v9.23.0
	pgregory.net/rapid v1.3.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/hashicorp/go-cleanhttp v0.5.2 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sync v0.23.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

replace github.com/idemkit/idempotency => ..

replace github.com/idemkit/idempotency/pgstore => ../pgstore

replace github.com/idemkit/idempotency/redisstore => ../redisstore

replace github.com/idemkit/idempotency/redisstore/rueidisstore => ../redisstore/rueidisstore

replace github.com/idemkit/idempotency/cmd => ../cmd
