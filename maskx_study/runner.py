"""The ablation study (paper Tables 1a-d, 2, Figure 3, and a deeper mask head) on the embedded data.

    python -m maskx study plan              # every run, done or not, in the order they run
    python -m maskx study run [--tables t1a,t2] [--seeds 0] [--max-runs N]
    python -m maskx study report            # RESULTS.md from results/

A ``StudyScale`` fixes data, backbones, image size and iterations; a ``Run`` is one trained model
(preset, split, seed, backbone). Each run writes ``results/<run>.json`` (config, AP on A and B for
bbox and segm, per class, wall times); runs already there are skipped, so the study resumes
after any interruption. Stage-wise runs share their seed's detector (trained once, in
``runs/study/``) and are evaluated on its cached detections (``detection_cache``). End-to-end runs
start from the same detector and then train every part jointly (``Config.detector`` under stage
e2e): from-scratch end-to-end training of 34 models does not fit the 10-hour CPU budget.

``results/`` is committed, ``runs/`` is not. In a fresh clone the first pending run that needs a
detector retrains ("restores") it with the torch thread count its result recorded: CPU training
is bit-reproducible for a given torch version and thread count, so the restored weights are
checked against the recorded sha256 and every result built on them stands; weights that come
out different supersede the detector's result and every result built on it (they are rerun).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from maskx.atomic import write_json_atomic
from maskx.config import INFERENCE_FIELDS, RECORDED_BEFORE, Config
from maskx.run_lock import lock_held, release_lock, take_lock
from maskx_study.results import (EXAMPLE_IMAGES, EXAMPLE_MIN_SCORE, default_results_dir, default_runs_dir,  # noqa: F401
                            estimate_hours, examples, load_results, load_superseded, run_versions, train_seconds)
from maskx_study.evaluation import EVAL_VERSION, STUDY_GT_BOX_IMAGES, StudyEvaluation, _DetectorEval, _val_split  # noqa: F401
from maskx_study.plan import (DIRECTIONS, FIG3_ROWS, ORDER, SCALES, T1A_ROWS, TABLES, Run, StudyScale,  # noqa: F401
                         Table, beyond_budget, plan, table_runs)


@dataclass
class Study(StudyEvaluation):
    """Runs the plan: trains what is missing, evaluates, writes ``results_dir/<run>.json``."""
    scale: StudyScale
    results_dir: Path = Path("results")
    runs_dir: Path = Path("runs/study")
    progress: bool = True
    log: Callable[[str], None] = print
    _train_annotations: Optional[dict] = field(default=None, repr=False)
    _detections: Optional["_DetectorEval"] = field(default=None, repr=False)

    def result_path(self, run: Run) -> Path:
        return Path(self.results_dir) / f"{run.key}.json"

    def run_dir(self, run: Run) -> Path:
        return Path(self.runs_dir) / run.key

    def run(self, runs: list[Run], max_runs: Optional[int] = None, poll_seconds: float = 20.0) -> list[Path]:
        """Run what is not done, in plan order. Several processes may run the same plan at once
        (``python -m maskx study run --jobs N``): each claims a run with a lock file, and a run
        waits for its detector's result, so detectors and their dependants never race."""
        from maskx.data.embedded import ensure_dataset

        ensure_dataset(self.scale.data, self.scale.data_size, progress=self.progress)
        self.supersede_stale(runs)
        self.add_gt_box_ious(runs)
        written: list[Path] = []
        todo = self._todo(runs)
        restores = sum(self.result_path(r).is_file() for r in todo)
        self.log(f"study {self.scale.name}: {len(runs) - len(todo) + restores} of {len(runs)} runs done, "
                 f"{len(todo) - restores} to go" + (f", {restores} detector(s) to restore first" if restores else ""))
        while max_runs is None or len(written) < max_runs:
            todo = [r for r in todo if not self._finished(r)]
            if not todo:
                break
            ready = [r for r in todo if (r.preset == "detector" and self._can_restore(r)) or
                     (r.preset != "detector" and self._finished(r.detector()) and self._init_ready(r))]
            # a stage-wise run that would wait for the RoI cache another worker is building goes last:
            # this worker runs something else meanwhile (an end-to-end run) instead of idling
            building = self._roi_caches_being_built(todo)
            ready.sort(key=lambda r: self._uses_roi_cache(r) and r.detector() in building)
            run = next((r for r in ready if self._claim(r)), None)
            if run is None:
                busy = any(self._locked(r) or self._locked(r.detector()) for r in todo)
                if not busy:  # nothing claimable and nobody working: e.g. a detector outside this plan
                    waiting = [r.key for r in todo if not self._init_ready(r)]
                    if waiting:
                        self.log(f"{len(waiting)} end-to-end run(s) wait for the weights of the stage-wise run "
                                 f"they start from, which are not here (runs/ is not committed): rerun those "
                                 f"stage-wise runs first, e.g. {waiting[0]}")
                    break
                time.sleep(poll_seconds)  # other processes hold the rest, or a detector is training
                continue
            try:
                self.log(f"[{len(runs) - len(todo) + 1}/{len(runs)}] {run.key}")
                written.append(self.run_one(run))
            finally:
                self._release(run)
            if run.preset == "detector" and self.supersede_stale(runs):  # a restore that came out different
                todo = self._todo(runs)
        return written

    def _uses_roi_cache(self, run: Run) -> bool:
        return run.config(self.scale).mask_roi_cache > 0

    def _roi_caches_being_built(self, todo: list[Run]) -> set[Run]:
        """The detectors whose RoI cache (``maskx.roi_cache``) is not built yet while a stage-wise run
        on them is claimed: its worker is building the cache, which the others would wait for."""
        from maskx.roi_cache import roi_cache_dir

        claimed = {r.detector() for r in todo if self._uses_roi_cache(r) and self._locked(r)}
        return {d for d in claimed if not (roi_cache_dir(self.run_dir(d)) / "meta.json").is_file()}

    def _can_restore(self, run: Run) -> bool:
        """A detector to train (no result), or to restore with no more threads than this process has:
        more would oversubscribe the cores beside the other workers (``train_detectors_first``)."""
        import torch

        return not self.result_path(run).is_file() or self.restore_threads(run) <= torch.get_num_threads()

    def train_detectors_first(self, runs: list[Run], threads: int) -> list[Path]:
        """Train, one after another in this process and before the ``--jobs`` workers start (each of
        which gets ``threads``), the detectors ``runs`` need that a worker should not: new ones, with all
        of this process's threads (a 1-thread worker takes about 1.4x as long while the other waits
        for it), and restores of those that trained with more than ``threads`` (they would
        oversubscribe the cores beside the other worker)."""
        from maskx.data.embedded import ensure_dataset

        first = [d for d in self._todo(runs) if d.preset == "detector" and
                 (not self.result_path(d).is_file() or self.restore_threads(d) > threads)]
        if first:
            ensure_dataset(self.scale.data, self.scale.data_size, progress=self.progress)
        done = []
        for det in first:
            if self._claim(det):
                try:
                    restoring = self.result_path(det).is_file()
                    self.log(f"{'restoring' if restoring else 'training'} {det.key} with "
                             f"{self.restore_threads(det) if restoring else _torch_threads()} threads "
                             "before the workers start")
                    done.append(self.run_one(det))
                finally:
                    self._release(det)
        return done

    def _init_ready(self, run: Run) -> bool:
        """An end-to-end run's stage-wise start (``Run.init``) is finished and its weights are here."""
        init = run.init(self.scale)
        return init is None or (self._finished(init) and self._trained_here(init))

    def _config(self, run: Run):
        init = run.init(self.scale)
        return run.config(self.scale, self.run_dir(run.detector()), self.run_dir(init) if init else None)

    def _trained_here(self, run: Run) -> bool:
        return (self.run_dir(run) / "done.json").is_file()

    def _finished(self, run: Run) -> bool:
        """Its result is written; a detector's weights must also be here, for the runs built on it."""
        return self.result_path(run).is_file() and (run.preset != "detector" or self._trained_here(run))

    def _todo(self, runs: list[Run]) -> list[Run]:
        """The runs without a result, in plan order, each preceded by its detector where that has a
        result but no weights here (``runs/`` is not committed: a fresh clone retrains, "restores", it);
        a detector whose result an older evaluation measured is restored and measured again."""
        out: list[Run] = []
        for r in runs:
            if self.result_path(r).is_file() and not (r.preset == "detector" and self._measured_before(r)):
                continue
            if r.preset != "detector" and self.result_path(r.detector()).is_file() and \
                    not self._trained_here(r.detector()) and r.detector() not in out:
                out.append(r.detector())
            if r not in out:
                out.append(r)
        return out

    def _measured_before(self, run: Run) -> bool:
        """Its result was measured by an older evaluation (a detector not trained here: restored, then
        measured again by ``run_one``)."""
        return json.loads(self.result_path(run).read_text()).get("eval_version", 1) != EVAL_VERSION

    def stale_reason(self, run: Run, record: dict) -> Optional[str]:
        """Why a finished run's result no longer answers the plan (None: it does): another config
        (the scale changed), another generator version (the data changed) or an older evaluation
        (``EVAL_VERSION``: measured again, its weights kept)."""
        from maskx.data.embedded import GENERATOR_VERSION

        want_config = self._config(run)
        want = want_config.to_json()
        try:  # fields the recorded config lacks: the values the run had (RECORDED_BEFORE)
            recorded = record.get("config")
            recorded = {**RECORDED_BEFORE, **recorded} if isinstance(recorded, dict) else recorded
            have = Config.from_json(recorded).to_json()
        except ValueError as e:
            return f"unreadable config ({e})"
        # a detector trains boxes on every class whatever its split says: the split is not part of it
        ignore = {"detector", "split"} if want["stage"] == "detector" else {"detector", "mask_init"}
        ignore |= want_config.unused_fields()
        diff = sorted(k for k in want if k not in ignore and have[k] != want[k])
        if diff:
            what = "inference settings differ" if set(diff) <= set(INFERENCE_FIELDS) else "config differs"
            return f"{what} in " + ", ".join(f"{k} ({have[k]!r} → {want[k]!r})" for k in diff)
        if record.get("generator_version") != GENERATOR_VERSION:
            return f"generator version {record.get('generator_version')} → {GENERATOR_VERSION}"
        # a detector whose weights are not here keeps its result until it is restored (the result holds
        # what the restore must reproduce); ``run_one`` measures it again then
        measured_by = record.get("eval_version", 1)
        if measured_by != EVAL_VERSION and (want["stage"] != "detector" or self._trained_here(run)):
            return f"evaluation version {measured_by} → {EVAL_VERSION}: measured again"
        here = self.detector_sha256(run)
        if want["stage"] == "detector":
            recorded = self.recorded_detector_sha256(run)
            if recorded and here and recorded != here:
                return (f"weights here differ from the recorded ones (checkpoint sha256 {recorded[:12]}… → "
                        f"{here[:12]}…): evaluated again")
            return None
        trained_on = record.get("detector_sha256") or (record.get("roi_cache") or {}).get("detector_sha256")
        if trained_on and here and trained_on != here:
            return f"its detector was retrained (checkpoint sha256 {trained_on[:12]}… → {here[:12]}…)"
        return None  # a detector not trained here (a fresh clone) is restored before anything uses it

    def recorded_detector_sha256(self, run: Run) -> Optional[str]:
        """The checkpoint a detector's result (and the results built on it) recorded: what a restore
        must reproduce. A detector result that does not record it: the one its dependants agree on."""
        det = run.detector()
        path = self.result_path(det)
        recorded = json.loads(path.read_text()).get("checkpoint_sha256") if path.is_file() else None
        if recorded:
            return recorded
        seen = {json.loads(p.read_text()).get("detector_sha256") for p in Path(self.results_dir).glob("*.json")
                if p.name.startswith(f"{det.backbone}__") and p.stem.endswith(f"__s{det.seed}")}
        seen.discard(None)
        return seen.pop() if len(seen) == 1 else None

    def detector_sha256(self, run: Run) -> Optional[str]:
        """The finished detector's final checkpoint (its sha256), which a run built on; None while
        the detector is not trained."""
        from maskx.checkpoint import list_checkpoints

        det_dir = self.run_dir(run.detector())
        ckpts = list_checkpoints(det_dir) if (det_dir / "done.json").is_file() else []
        return json.loads(ckpts[-1].read_text()).get("sha256") if ckpts else None

    def supersede_stale(self, runs: list[Run]) -> list[Path]:
        """Move results (and run folders) that no longer match the plan to ``superseded/`` beside
        them, stamped, so they are rerun and stay on record (RESULTS.md lists the gate's history)."""
        moved = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for run in runs:
            path = self.result_path(run)
            # locked: running, or being moved by another worker
            if not path.is_file() or not take_lock(self._lock_path(run)):
                continue
            try:
                if not path.is_file():
                    continue
                record = json.loads(path.read_text())
                reason = self.stale_reason(run, record)
                if reason is None:
                    continue
                self.log(f"{run.key}: superseded ({reason}); it will be rerun")
                # an inference-only change, other weights here or a new evaluation is re-evaluated: its trained run stays
                moved.append(self._move_aside(run, record, reason, stamp,
                                              keep_run_dir=reason.startswith(("inference", "weights here", "evaluation"))))
            finally:
                self._release(run)
        return moved

    def _move_aside(self, run: Run, record: dict, reason: str, stamp: Optional[str] = None,
                    keep_run_dir: bool = False) -> Path:
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        record["superseded"] = {"reason": reason, "at": stamp}
        dest = self.result_path(run).parent / "superseded" / f"{run.key}__{stamp}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, dest)
        self.result_path(run).unlink()
        if self.run_dir(run).is_dir() and not keep_run_dir:
            old = Path(self.runs_dir) / "superseded" / f"{run.key}__{stamp}"
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.run_dir(run), old)
        return dest

    def _lock_path(self, run: Run) -> Path:
        return Path(self.runs_dir) / f"{run.key}.lock"

    def _locked(self, run: Run) -> bool:
        return lock_held(self._lock_path(run))

    def _claim(self, run: Run) -> bool:
        if not take_lock(self._lock_path(run)):
            return False
        if self._finished(run):  # finished by another process meanwhile
            self._release(run)
            return False
        return True

    def _release(self, run: Run) -> None:
        release_lock(self._lock_path(run))

    def run_one(self, run: Run) -> Path:
        from maskx.checkpoint import list_checkpoints
        from maskx.roi_cache import roi_cache_dir
        from maskx.train import run_training

        out = self.run_dir(run)
        det_dir = self.run_dir(run.detector())
        config = self._config(run)
        if config.detector and not (det_dir / "done.json").is_file():
            raise RuntimeError(f"{run.key}: its detector {det_dir} is not trained; run the plan in order")
        restoring = run.preset == "detector" and self.result_path(run).is_file()
        t0 = time.perf_counter()
        if not (out / "done.json").is_file():
            with _threads(self.restore_threads(run) if restoring else None):
                run_training(config, Path(self.scale.data) / "train", out, resume=bool(list_checkpoints(out)),
                             progress=self.progress)
        train_wall = time.perf_counter() - t0
        restores = []
        if restoring and self._restored(run):
            if not self._measured_before(run):
                return self.result_path(run)
            restores = json.loads(self.result_path(run).read_text()).get("restores", [])  # measured again below
        t0 = time.perf_counter()
        metrics, eval_how, preds, val_ids, grid = self.evaluate_run(run, config, out, det_dir)
        record = {"run": run.key, "preset": run.preset, "split": run.split, "seed": run.seed, "backbone": run.backbone,
                  "stage": config.stage, "scale": self.scale.to_json(),
                  # as trained, with the inference settings it was evaluated with
                  "config": Config.from_json(json.loads((out / "run.json").read_text())["config"])
                  .with_inference_of(config).to_json(),
                  "metrics": metrics, "eval": eval_how, "train_seconds": train_seconds(out / "log.jsonl"),
                  "train_wall_seconds_this_process": round(train_wall, 1),
                  "eval_seconds": round(time.perf_counter() - t0, 1), **run_versions(out),
                  "train_masks_per_A_class": self.masks_per_a_class(run), "examples": examples(preds, val_ids),
                  "eval_version": EVAL_VERSION}
        if restores:
            record["restores"] = restores
        if grid is not None:
            record["gt_box_masks"] = grid
        record["detector_sha256" if config.stage != "detector" else "checkpoint_sha256"] = self.detector_sha256(run)
        cache = roi_cache_dir(det_dir) / "meta.json"
        if config.mask_roi_cache and cache.is_file():  # built once per detector: counted once by the report
            c = json.loads(cache.read_text())
            record["roi_cache"] = {k: c.get(k) for k in ("detector_sha256", "per_image", "rois", "build_seconds")}
        path = self.result_path(run)
        write_json_atomic(record, path)
        return path

    def restore_threads(self, run: Run) -> int:
        """The torch thread count a detector trained with (its result records it; a result that does
        not: ``LEGACY_DETECTOR_THREADS``). Its weights are reproducible only with the same count."""
        return json.loads(self.result_path(run).read_text()).get("torch_threads") or LEGACY_DETECTOR_THREADS

    def _restored(self, run: Run) -> bool:
        """After retraining a detector that has a result (its weights were not here): True if the
        weights are the recorded ones, bit for bit (CPU training is deterministic for a given torch
        and thread count), so every result built on it stands. Else its result is superseded (and,
        by ``stale_reason``, those built on it) and it is evaluated anew."""
        path, want, got = self.result_path(run), self.recorded_detector_sha256(run), self.detector_sha256(run)
        record = json.loads(path.read_text())
        if want is not None and want == got:
            seconds = train_seconds(self.run_dir(run) / "log.jsonl")
            self.log(f"{run.key}: restored bit for bit (checkpoint sha256 {got[:12]}…) in {seconds / 60:.1f} min")
            # the same training measured again: the study's idle-time estimate takes the lower (wall_hours)
            restores = record.get("restores", []) + [{"train_seconds": seconds, "at": time.strftime("%Y%m%d-%H%M%S")}]
            write_json_atomic({**record, "checkpoint_sha256": got, "restores": restores}, path)
            return True
        from maskx.train import cpu_signature

        reason = (f"retrained where its weights were missing, and the checkpoint differs from the recorded one "
                  f"(sha256 {str(want)[:12]}… → {str(got)[:12]}…; trained on {record.get('cpu') or 'an unrecorded CPU'}, "
                  f"retrained on {cpu_signature()} with {self.restore_threads(run)} threads)")
        self.log(f"{run.key}: WARNING {reason}; the results built on it will be superseded and rerun")
        self._move_aside(run, record, reason, keep_run_dir=True)
        return False

# A detector result that records no thread count: trained alone on this 2-core machine, with both threads.
LEGACY_DETECTOR_THREADS = 2


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextmanager
def _threads(n: Optional[int]):
    """torch's intra-op thread count set to ``n`` inside (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rerun_or_load(tables: list[str], mode: str = "results", scale: str = "study", results_dir=None,
                  runs_dir=None, seeds: Optional[list] = None, iters: Optional[dict] = None,
                  data_dir: Optional[str] = None, root=None, progress: bool = False) -> tuple[StudyScale, dict]:
    """What every notebook's first code cell does: ``mode="results"`` loads ``results_dir``;
    ``mode="train"`` first (re)runs the runs of ``tables`` at ``scale`` (with ``iters`` overriding
    its iteration counts and ``seeds`` its seeds, on every backbone), then loads. ``results_dir`` defaults to
    ``results/`` for the committed scale and ``runs/results-<scale>`` (not committed) otherwise.
    Relative paths are taken from ``root`` (default: the repository, found from the current folder)."""
    import dataclasses

    if mode not in ("results", "train"):
        raise ValueError(f"mode must be 'results' or 'train', got {mode!r}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    root = Path(root) if root else next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "maskx").is_dir()),
                                        Path.cwd())
    sc = SCALES[scale]
    if iters:  # detector_iters given alone sets every detector's (second backbone's too)
        if "detector_iters" in iters:
            iters = {"second_backbone_detector_iters": None, **iters}
        sc = dataclasses.replace(sc, **iters)
    if seeds:  # named seeds are run on every backbone, those of the second beyond the budget too
        sc = dataclasses.replace(sc, seeds=tuple(seeds), second_backbone_seeds=None)
    sc = dataclasses.replace(sc, data=str(root / (data_dir or sc.data)))
    results_dir = root / (results_dir or default_results_dir(scale))
    runs_dir = root / (runs_dir or default_runs_dir(scale))
    if mode == "train":
        Study(sc, results_dir=results_dir, runs_dir=runs_dir, progress=progress).run(plan(sc, tables))
    return sc, load_results(results_dir)
