"""What every layer of sharp-rt shares; imports only the standard library and numpy.

| module     | holds                                                                        |
| ---------- | ---------------------------------------------------------------------------- |
| `errors`   | :class:`SharpError` and its kinds: the one-line, hinted errors users see      |
| `paths`    | where downloads and caches live (checkpoint, TensorRT timing caches)          |
| `atomic`   | atomic file writes: temporary file, fsync, rename                             |
| `contract` | the engine contract: I/O names and shapes, the artifact manifest (read/write) |
"""
