"""memwise as a service: a REST server (``memwise serve``) and an MCP server (``memwise mcp``).

Both stand on the same parts, one job each:

- :mod:`~memwise.server.config`: what a server is told (data folder, keys file, limits).
- :mod:`~memwise.server.auth`: API keys (stored hashed) and the tenant each key is bound to.
- :mod:`~memwise.server.tenants`: where a tenant's memory lives (one store per tenant), the cache of
  open ones and, with Postgres, the one connection pool they share.
- :mod:`~memwise.server.service`: a tenant's memory as the endpoints call it (:class:`MemoryService`,
  an :class:`~memwise.facts.memory.AsyncMemory` with the service's errors and a store-only close).
- :mod:`~memwise.server.jobs`: long work (ingest, consolidation) as jobs with an id and progress, kept in
  the tenant's store so every server process on it reports them.
- :mod:`~memwise.server.schemas`, :mod:`~memwise.server.errors`, :mod:`~memwise.server.app`: the REST
  surface; :mod:`~memwise.server.mcp`: the MCP tools.

Nothing here is imported by ``import memwise``: fastapi, uvicorn and mcp are the ``server`` extra.
"""
