"""Write a model's class-embedding projections beside its checkpoint, for the app's Embeddings page.

    python scripts/projections.py                      # the shipped model: models/maskx-3k/projections.npz
    python scripts/projections.py runs/study/efficientnet_lite0__detector__all__s0   # a study detector
    python scripts/projections.py RUN --out FILE       # elsewhere

For every input of T (w_cls, w_box, w_cls+box, GloVe, text, randn) and the model's w_seg: a 2-d UMAP
of the classes (one random_state for all), each class's nearest set-A classes (cosine of the centred
rows) and the classes' families (``maskx_app.projection.build_projections``). The page draws its first
view from this file without loading the model; it recomputes (with a note) when the file is missing
or was made for other weights. ``python -m maskx ship`` writes it for the shipped model; rerun this
after replacing a model's weights by hand. Takes a few minutes for 3000 classes on a CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # maskx_app from a checkout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="maskx-3k",
                    help="a shipped model's name, a run folder or a ckpt_*.json (default: maskx-3k)")
    ap.add_argument("--out", type=Path, help="the file to write (default: projections.npz beside the checkpoint)")
    args = ap.parse_args(argv)
    from maskx_app.projection import build_projections

    t0 = time.perf_counter()
    path = build_projections(args.model, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"{path}: {path.stat().st_size / 1024:.0f} kB in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
