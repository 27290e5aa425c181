-- wrk for the overload phase (bench/overload.py): one or more requests, sent in turn, each
-- connection waiting a fixed time between its requests (0: full speed).
-- Arguments: <pause ms> <after a 503: pause ms, 0 for the same pause> then, per request,
-- <method> <path> <bearer token> <body or "-">.
-- A client that honours Retry-After (as the app does, docs/mobile.md) waits at least that
-- long after a 503, and up to twice as long (its polls' jitter: clients out of step). wrk's Lua does not say which connection an answer came on: each 503 makes one of
-- the thread's next pauses the long one, so there are as many long pauses as 503s.
local pause, after_503 = 0, 0
local backoffs = 0
local requests = {}
local n, i = 0, 0

function init(args)
    pause = tonumber(args[1])
    after_503 = tonumber(args[2])
    for k = 3, #args, 4 do
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
    return pause
end
