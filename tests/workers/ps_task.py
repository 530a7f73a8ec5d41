"""A worker or ps task of a parameter-server cluster: `Scale.auto()` then `serve()` until killed."""

import tfscale as ts

scale = ts.Scale.auto()
assert scale.is_server, repr(scale)
print(repr(scale), flush=True)
scale.serve()
