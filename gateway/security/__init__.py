"""Who may call, as whom, how often: bearer-token authentication, the identity context the
gateway signs for modules, SigV4 signing of module calls, rate limits."""
