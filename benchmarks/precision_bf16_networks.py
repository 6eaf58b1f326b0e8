"""tiny1536, trained rule: the stage-2 candidates of torch bf16 growth (whole networks) checked directly.

Each whole network in float32 on its own on the shipped torch bf16 layout, on the probes (the
export's bf16 validation) and, for the first that passes, on the evaluation photos (per
Gaussian).  Not a full growth run (stage 1 and the ranking are skipped for time); see
docs/precision.md.

Usage::

    nice -n 10 python benchmarks/precision_bf16_networks.py SEED OUT.json

The synthetic checkpoint is written to the temporary folder.  OUT.json is rewritten after each
step, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from precision_campaign import EVAL_PHOTOS, conditions, error_row, load_photo, torch_outputs  # noqa: E402

from sharp_rt.export.islands import with_islands  # noqa: E402
from sharp_rt.export.validate import PROBE_PHOTOS, probe_image, reference_outputs, validate_probes  # noqa: E402
from sharp_rt.sharp_ref import get_config, predictor_from_state_dict, synthetic_checkpoint  # noqa: E402
from sharp_rt.sharp_ref.mixed_precision import BF16_FP32_ISLANDS  # noqa: E402

NETWORKS = ("feature_model", "monodepth_model.monodepth_predictor.encoder", "monodepth_model")


def main() -> None:
    seed, out = int(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(2)
    config = get_config("tiny1536")
    checkpoint = Path(tempfile.gettempdir()) / f"tiny1536-trained-seed{seed}.pt"
    state = synthetic_checkpoint(config, seed, checkpoint, statistics="trained")
    ref_model = predictor_from_state_dict(state, config)
    probes = [(p, *probe_image(config.internal_resolution, photo=p)) for p in PROBE_PHOTOS]
    refs = [reference_outputs(ref_model, image, f) for _, image, f in probes]
    record = {
        "conditions_start": conditions(),
        "preset": "tiny1536",
        "rule": "trained",
        "seed": seed,
        "candidates": [],
        "rows": [],
    }

    def save() -> None:
        record["conditions_end"] = conditions()
        out.write_text(json.dumps(record, indent=1))

    chosen = None
    for net in NETWORKS:
        islands = with_islands(dict(BF16_FP32_ISLANDS), [net], [{"module": net, "what": net}])
        started = time.perf_counter()
        model = predictor_from_state_dict(state, config).to_compute_dtype(torch.bfloat16, islands)
        outputs = [reference_outputs(model, image, f) for _, image, f in probes]
        verdict = validate_probes(outputs, probes, refs, "bf16")
        record["candidates"].append(
            {
                "network": net,
                "fp32_islands": sorted(islands),
                "status": verdict["status"],
                "failures": verdict["failures"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(net, verdict["status"], verdict["failures"][:2], flush=True)
        save()
        if verdict["status"] == "passed":
            chosen = (net, model)
            break
    if chosen:
        net, model = chosen
        for path in sorted(q for q in EVAL_PHOTOS.iterdir() if q.suffix in (".jpg", ".png")):
            photo = load_photo(path, config.internal_resolution)
            row = error_row(torch_outputs(model, photo), torch_outputs(ref_model, photo), "bf16")
            row.update(
                preset="tiny1536",
                rule="trained",
                seed=seed,
                photo=path.stem,
                engine="bf16 torch",
                layout={"grown_islands": [net], "how": "stage-2 candidate checked directly"},
                load_average=round(os.getloadavg()[0], 2),
            )
            record["rows"].append(row)
            save()
            print(path.stem, row["covariances"]["fraction_within"], row["fraction_within_all"], flush=True)
    save()


if __name__ == "__main__":
    main()
