"""Reference servers speaking protocol v1, run by `chat-bench` beside roomcast.

`naive` and `sio` are Python modules (`python -m bench.references.naive`);
`node/server.js` is the seed design, whose one dependency npm installs on
first use.
"""
