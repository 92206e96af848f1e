"""`chat-bench`: load generator, reference servers and reports for roomcast.

The parent process (`bench.__main__`) starts the servers and one or more
generator processes (`bench.worker`), pinned to separate cores where the
machine allows, and turns what they report into JSON, markdown and a plot.
"""
