"""What keeps a failing module from taking drivers down with it: circuit breakers, bulkheads,
budgeted retries, fault injection for game days, fallbacks."""
