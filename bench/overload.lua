-- wrk for the overload phase (bench/overload.py): one or more requests, sent in turn, each
-- connection waiting between its requests (0: full speed).
-- Arguments: <mean pause ms> <after a 503: pause ms, 0 for the usual pause> <random seed>
-- then, per request, <method> <path> <bearer token> <body or "-">.
-- Each pause is drawn from an exponential distribution of that mean, so a connection's
-- requests arrive as an independent client's do (a Poisson stream, and the connections'
-- sum one too). A fixed pause would keep the connections in step: all started at once,
-- each answered in a fraction of its pause, they go on sending together, a burst of every
-- connection at once per pause (hundreds of requests in the same millisecond), which
-- measures the generator's lockstep rather than the offered rate.
-- A client that honours Retry-After (as the app does, docs/mobile.md) waits at least that
-- long after a 503, and up to twice as long (its polls' jitter: clients out of step).
-- wrk's Lua does not say which connection an answer came on: each 503 makes one of
-- the thread's next pauses the long one, so there are as many long pauses as 503s.
local pause, after_503 = 0, 0
local backoffs = 0
local requests = {}
local n, i = 0, 0

function init(args)
    pause = tonumber(args[1])
    after_503 = tonumber(args[2])
    math.randomseed(tonumber(args[3]))
    for k = 4, #args, 4 do
        local headers = { ["Authorization"] = "Bearer " .. args[k + 2] }
        local body = nil
        if args[k + 3] ~= "-" then
            body = args[k + 3]
            headers["Content-Type"] = "application/json"
        end
        n = n + 1
        requests[n] = wrk.format(args[k], args[k + 1], headers, body)
    end
    if after_503 == 0 then
        response = nil -- nothing to look at: wrk skips the call
    end
end

function request()
    i = i % n + 1
    return requests[i]
end

function response(status, headers, body)
    if status == 503 then
        backoffs = backoffs + 1
    end
end

function delay()
    if backoffs > 0 then
        backoffs = backoffs - 1
        return after_503 + math.random(0, after_503)
    end
    if pause == 0 then
        return 0
    end
    -- wrk waits whole milliseconds: rounded, the mean stays the pause
    return math.floor(-pause * math.log(1 - math.random()) + 0.5)
end
