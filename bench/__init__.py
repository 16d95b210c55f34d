"""`make bench`: the product measured against the raw limits of its own infrastructure.

`python -m bench` starts its own embedded NATS and Postgres in a temporary state dir,
runs the four services with the offline provider, drives them over loopback with a
bounded load, and prints one line per figure with its ratio to a raw baseline
measured in the same run. Nothing here is a test: pytest never collects it.
"""
