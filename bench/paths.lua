-- wrk script for bench/http.py: each thread cycles through the paths in $BENCH_PATHS (one a
-- line), starting at its own share of them, with the headers in $BENCH_HEADERS ("Name: value"
-- lines: the session cookie, Host, HX-Request ...). It counts statuses and prints one JSON line.
local threads = {}
local made = 0

function setup(thread)
  thread:set("id", made)
  made = made + 1
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    if line ~= "" then table.insert(paths, line) end
  end
  for line in io.lines(os.getenv("BENCH_HEADERS")) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then wrk.headers[name] = value end
  end
  local share = math.floor(#paths / tonumber(os.getenv("BENCH_THREADS")))
  index = (id * share) % #paths + 1
  statuses = {}
end

function request()
  local path = paths[index]
  index = index % #paths + 1
  return wrk.format("GET", path)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
