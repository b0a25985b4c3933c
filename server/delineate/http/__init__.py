"""The HTTP layer every route shares: middleware (``edge``), who is calling (``auth``),
reading a request (``params``) and writing an answer (``responses``). It imports no route:
the HTTP API, the real-time transports and the dashboard all build on it."""
