-- wrk script for bench/run (used when oha is not installed): POST a JSON body with the key,
-- optionally pace each connection (BENCH_DELAY_MS between its requests), count status codes,
-- and print one JSON line shaped like oha's output.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pace > 0 then
  function delay() return pace end
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local codes = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do codes[k] = (codes[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(codes) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"summary": {"average": %f, "requestsPerSec": %f}, "latencyPercentiles": {"p50": %f, "p99": %f}, ' ..
    '"statusCodeDistribution": {%s}, "errorDistribution": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    latency.mean / 1e6, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e6,
    latency:percentile(99) / 1e6, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout))
end
