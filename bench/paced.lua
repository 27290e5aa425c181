-- Paced wrk: each connection waits a fixed time between its requests (the argument, in
-- milliseconds), so a known rate is offered: connections * 1000 / delay requests a second.
local pause = 10

function init(args)
    if args[1] then pause = tonumber(args[1]) end
end

function delay()
    return pause
end
