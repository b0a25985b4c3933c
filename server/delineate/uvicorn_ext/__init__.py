"""Everything of the server that reaches into uvicorn's private parts, written against the
uvicorn versions ``delineate.versions.SUPPORTED_UVICORN`` names (the tests that pin those
parts fail outside them): the HTTP protocol that holds a replica's request limits
(``http``), and the WebSocket protocol the server runs with direct writes of ready-made
frames and SSE chunks and closes bounded by a deadline (``sockets``).
"""
