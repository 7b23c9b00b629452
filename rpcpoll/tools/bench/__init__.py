"""`rpcpoll bench`: load generation (worker.py), progress (progress.py), summary (report.py) and
the command (cli.py)."""
