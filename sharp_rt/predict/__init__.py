"""Photos to splats: the :class:`Predictor` pipeline and what ``predict`` reads and writes.

| module      | holds                                                                              |
| ----------- | ---------------------------------------------------------------------------------- |
| `predictor` | ``Predictor`` (load, preprocess, engine, unproject), ``EngineSpec``                 |
| `inputs`    | command-line inputs (files, folders, glob patterns) to a list of files             |
| `outputs`   | where each image's splat goes, which outputs are complete (resume), writing them   |
"""
