package redisrec

// The scripts below each run one protocol step atomically on the node that
// holds the record: one key (KEYS[1]), one round trip. They read the clock
// with TIME, so every lease and expiry decision uses the server's clock, never
// a client's. Redis numbers in Lua are doubles: integers are exact up to 2^53,
// which microseconds since 1970 stay under until the year 2255; the Go side
// clamps durations so that sums stay there too.
//
// Fences. A fresh claim gets fence = max(previous + 1, now in µs), where
// previous is the fence kept in the record (in flight, completed or
// released). While the record exists, that is strictly greater than before,
// whatever the clocks do. Once it is gone, the new fence is the clock, so
// every key is kept until the server's clock has passed the fence it carries
// (expireat below; Release deletes only a record whose fence is already in the
// past): when Redis drops the key, its clock is past the fence, so the next
// fence, read from that same clock, is greater. This holds as long as the
// master's clock does not run backwards past a fence it handed out (an NTP
// step back, or a failover to a replica whose clock is far behind); Redis
// replicates expiry as an absolute time, so a lagging replica's clock only
// keeps records longer.

// prelude holds the helpers every script shares. The record's fixed part
// is read and written by single struct calls: 'c0' takes its length from the
// integer before it, so the owner and the fingerprint come out, and go in,
// with their lengths in one call.
const prelude = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- parse returns a record's kind, fence, until, owner and fingerprint.
local function parse(v)
  local kind = string.sub(v, 1, 1)
  if kind ~= 'F' and kind ~= 'C' then
    error('redisstore: unknown record kind')
  end
  local fence, till, owner, fp = struct.unpack('>I8I8I4c0I4c0', v, 2)
  return kind, fence, till, owner, fp
end

local function header(kind, fence, till, owner, fp)
  return struct.pack('>c1I8I8I4c0I4c0', kind, fence, till, #owner, owner, #fp, fp)
end

-- expireat is the PXAT (ms) of a record that lives until till (µs) and
-- carries fence: the key also outlives the fence's instant.
local function expireat(till, fence)
  return math.max(math.ceil(till / 1000), math.floor(fence / 1000) + 1)
end
`

// BeginScript is the Lua source of Begin. ARGV owner, fingerprint, lease
// (µs). Replies with the fence (> 0) when the caller holds the claim, the
// completed record itself (a string: BeginRecord) to replay or to refuse
// for its fingerprint, 0 for a mismatch with a claim in flight, and
// -1 - (remaining lease, µs) when another owner's claim is in flight. A
// completed record is answered after reading its kind and expiry alone: the
// client decodes it anyway, so it compares the fingerprints too.
const BeginScript = prelude + `
local key, owner, fp = KEYS[1], ARGV[1], ARGV[2]
local t = now()
local v = redis.call('GET', key)
local prev = 0
if v then
  local kind = string.byte(v)
  if kind ~= 67 and kind ~= 70 then -- 'C', 'F'
    error('redisstore: unknown record kind')
  end
  local fence, till = struct.unpack('>I8I8', v, 2)
  if t < till then
    if kind == 67 then return v end
    local _, _, _, holder, rfp = parse(v)
    if rfp ~= '' and fp ~= '' and rfp ~= fp then return 0 end
    if holder == owner then return fence end
    return -1 - (till - t)
  end
  prev = fence
end
local fence = math.max(prev + 1, t)
local till = t + tonumber(ARGV[3])
redis.call('SET', key, header('F', fence, till, owner, fp), 'PXAT', expireat(till, fence))
return fence
`

// CompleteScript is the Lua source of Complete. ARGV owner, fence (8 bytes),
// fingerprint, payload, expiry (µs, or -1 for now + ttl), ttl (µs). Replies
// 1 when it completed the claim, 2 when this token had completed it already,
// 0 when the token does not hold the claim.
const CompleteScript = prelude + `
local key, owner, fence8, fp = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('GET', key)
if not v then return 0 end
local kind, fence, till, holder, rfp = parse(v)
if holder ~= owner or string.sub(v, 2, 9) ~= fence8 then return 0 end
if kind == 'C' then return 2 end
local t = now()
if t >= till then return 0 end
if fp == '' then fp = rfp end
local exp = tonumber(ARGV[5])
if exp < 0 then exp = t + tonumber(ARGV[6]) end
redis.call('SET', key, struct.pack('>c1I8I8I4c0I4c0I8', 'C', fence, exp, #owner, owner, #fp, fp, t) .. ARGV[4], 'PXAT', expireat(exp, fence))
return 1
`

// ReleaseScript is the Lua source of Release. ARGV owner, fence (8 bytes).
// Replies 1 when released, 0 when the token does not hold the claim.
const ReleaseScript = prelude + `
local key, owner, fence8 = KEYS[1], ARGV[1], ARGV[2]
local v = redis.call('GET', key)
if not v then return 0 end
local kind, fence, till, holder = parse(v)
if kind ~= 'F' or holder ~= owner or string.sub(v, 2, 9) ~= fence8 then return 0 end
local t = now()
if t >= till then return 0 end
if fence < t then
  redis.call('DEL', key)
else
  -- The fence is ahead of the clock: keep it, with the lease ended.
  redis.call('SETRANGE', key, 9, struct.pack('>I8', 0))
  redis.call('PEXPIREAT', key, expireat(0, fence))
end
return 1
`

// RenewScript is the Lua source of Renew. ARGV owner, fence (8 bytes), lease
// (µs). Replies 1 when renewed, 0 when the token does not hold the claim
// with a live lease.
const RenewScript = prelude + `
local key, owner, fence8 = KEYS[1], ARGV[1], ARGV[2]
local v = redis.call('GET', key)
if not v then return 0 end
local kind, fence, till, holder = parse(v)
if kind ~= 'F' or holder ~= owner or string.sub(v, 2, 9) ~= fence8 then return 0 end
local t = now()
if t >= till then return 0 end
till = t + tonumber(ARGV[3])
redis.call('SETRANGE', key, 9, struct.pack('>I8', till))
redis.call('PEXPIREAT', key, expireat(till, fence))
return 1
`

// LookupScript is the Lua source of Lookup. It replies with the completed,
// unexpired record, or an empty string (which no record is; a nil reply
// would cost the client an error).
const LookupScript = prelude + `
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'C' then return '' end
if now() >= struct.unpack('>I8', v, 10) then return '' end
return v
`

// StoreScript is the Lua source of Store. ARGV fingerprint, payload, expiry
// (µs, or -1 for now + ttl), ttl (µs). It replaces whatever the key held,
// keeping the fence. Replies 1.
const StoreScript = prelude + `
local key = KEYS[1]
local v = redis.call('GET', key)
local fence = 0
if v then fence = struct.unpack('>I8', v, 2) end
local t = now()
local exp = tonumber(ARGV[3])
if exp < 0 then exp = t + tonumber(ARGV[4]) end
redis.call('SET', key, struct.pack('>c1I8I8I4c0I4c0I8', 'C', fence, exp, 0, '', #ARGV[1], ARGV[1], t) .. ARGV[2], 'PXAT', expireat(exp, fence))
return 1
`

// InspectScript is the Lua source of Inspect, and of Claims for each key a
// SCAN finds. ARGV kind: "" for any record, "F" for claims in flight alone
// (other records answer as none, so that Claims does not fetch responses).
// Replies with a pair: the record (an empty string for none) and the
// server's clock in µs, which Info reads.
const InspectScript = prelude + `
local v = redis.call('GET', KEYS[1])
if not v or (ARGV[1] ~= '' and string.sub(v, 1, 1) ~= ARGV[1]) then v = '' end
return {v, now()}
`

// PurgeScript is the Lua source of Purge. It deletes the record, whatever
// its state, as Release does a claim: a record whose fence is ahead of the
// clock is kept, as a released claim with no owner, until the clock has
// passed its fence. Either way no token holds it any longer. Replies as
// InspectScript, with the record as it was.
const PurgeScript = prelude + `
local key = KEYS[1]
local t = now()
local v = redis.call('GET', key)
if not v then return {'', t} end
local _, fence = parse(v)
if fence < t then
  redis.call('DEL', key)
else
  redis.call('SET', key, header('F', fence, 0, '', ''), 'PXAT', expireat(0, fence))
end
return {v, t}
`
