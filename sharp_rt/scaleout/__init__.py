"""Scale-out: many photos on a Ray cluster, or the network on a Triton Inference Server.

| module              | holds                                                                       |
| ------------------- | --------------------------------------------------------------------------- |
| `ray_batch`         | ``predict --ray``: Ray Data decode tasks -> engine actor pool -> write tasks |
| `triton_config`     | the ``config.pbtxt`` of a sharp-rt model and the facts clients read back     |
| `triton_repository` | ``export --target triton``: a model repository around an exported artifact  |
| `triton_client`     | ``TritonEngine``: an :class:`~sharp_rt.engines.base.Engine` served by Triton |

Which to use, and how each scales: ``docs/scale-out.md`` and ``docs/serving.md``.
Each module imports Ray or tritonclient only when used.
"""
