"""Everything of the Redis backends that is Redis's own: the client for each mode (``client``,
``url``), the key names (``keys``), the pipelined connection of the journal's script
(``pipe``, ``cluster`` on a Cluster), errors at the boundary (``errors``) and the shared
rate-limit windows (``ratelimit``). The broker, job store and journal backends use it."""
