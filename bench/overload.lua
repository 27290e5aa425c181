-- wrk for the overload phase (bench/overload.py): one or more requests, sent in turn, each
-- connection waiting a fixed time between its requests (0: full speed).
-- Arguments: <pause ms> then, per request, <method> <path> <bearer token> <body or "-">.
local pause = 0
local requests = {}
local n, i = 0, 0

function init(args)
    pause = tonumber(args[1])
    for k = 2, #args, 4 do
        local headers = { ["Authorization"] = "Bearer " .. args[k + 2] }
        local body = nil
        if args[k + 3] ~= "-" then
            body = args[k + 3]
            headers["Content-Type"] = "application/json"
        end
        n = n + 1
        requests[n] = wrk.format(args[k], args[k + 1], headers, body)
    end
end

function request()
    i = i % n + 1
    return requests[i]
end

function delay()
    return pause
end
