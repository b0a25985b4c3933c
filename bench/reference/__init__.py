"""Small reference servers for the side-by-side benchmark (see bench/run.py).

Each is what a Python team would otherwise build for "push progress to many sockets through
several replicas": the same channels, frames and Redis, with the library doing the fan-out.
"""
