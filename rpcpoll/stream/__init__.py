"""Streaming RPCs: the ends of a stream (core.py) and the call objects clients use (calls.py)."""
