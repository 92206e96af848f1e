"""The edge: an aiohttp process that terminates client WebSockets and talks to the broker."""
