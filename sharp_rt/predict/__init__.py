"""Photos to splats: the :class:`Predictor` pipeline, what ``predict`` reads and writes, and its batch.

| module      | holds                                                                              |
| ----------- | ---------------------------------------------------------------------------------- |
| `predictor` | ``Predictor`` (load, preprocess, engine, unproject), ``EngineSpec``                 |
| `inputs`    | command-line inputs (files, folders, glob patterns) to a list of files             |
| `outputs`   | where each image's splat goes, which outputs are complete (resume), writing them   |
| `spec`      | ``engine_spec``: the engine of a command's options, decided once                   |
| `batch`     | a run: ``plan_batch`` (resume rule), ``run_local`` (the local loop), ``BatchReport`` |
| `render_batch` | ``render``'s batch: scenes to videos with predict's claims and results          |
"""
