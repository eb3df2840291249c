"""The HTTP ingest service (``salespulse serve``): a pure core (tokens, rate limits, request bodies,
webhook mappings, check-ins) and the Starlette app at the edge (:mod:`streams.ingest.service`)."""
