"""The broker: one ZeroMQ XSUB/XPUB proxy that every edge publishes into and subscribes from."""
