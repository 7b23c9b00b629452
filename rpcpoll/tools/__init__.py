"""Command-line clients: `rpcpoll call`, `rpcpoll list` (call.py) and `rpcpoll bench`
(bench/), with the schema loading (schema.py) and options (common.py) they share."""
