"""``hf-fcr``: the command line. ``hf-fcr demo`` is the main job (fully offline)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from . import __version__
from .data import BUILTIN_DATASETS

# Everything else is imported in the subcommand that uses it: `hf-fcr --help` imports no torch (its import time
# stays under a tenth of torch's; tests/test_cli_arguments.py checks the torch part).

DESCRIPTION = """\
Post-hoc debiasing of image classifiers by Fictitious Class Removal (FCR): find the last-layer weight that carries
a class or a spurious cue and edit it by a closed formula (one weight per class, controllable rate r).

Start with `hf-fcr demo --output_dir outputs/demo`: it builds the offline SpuriousDigits benchmark, trains an
ERM model, runs FCR, DFR and controls on the same features, prints a table and the diagnosis' verdict, and writes
results, plots and the model auto recommends (with its fcr_config.json and model card).
"""


def _demo(args: argparse.Namespace) -> int:
    from .core.metrics import format_table
    from .demo.main import run_demo

    results = run_demo(
        args.output_dir,
        seed=args.seed,
        correlation=args.correlation,
        epochs=args.epochs,
        arch=args.arch,
        rule=args.rule,
        overwrite=args.overwrite,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        out, recommended = args.output_dir, results["recommended"]
        print()
        print(format_table(results["methods"]))
        print(f"\nDiagnosis: {results['diagnosis']['verdict']}")
        print(f"\nRecommended ({recommended['method']}, auto's choice): {os.path.join(out, recommended['folder'])}")
        print(f"For comparison: {os.path.join(out, 'fcr-model')} (FCR's edit), {os.path.join(out, 'erm-model')} (ERM)")
        print(f"Results in {out}: results.json, sweep_validation.png, sweep_test.png, diagnosis.png")
    return 0


def _dataset(args: argparse.Namespace) -> Any:
    from .data import load_data

    return load_data(args.dataset_name, streaming=args.streaming, seed=args.dataset_seed)


def _remover(args: argparse.Namespace) -> Any:
    from .remover import FictitiousClassRemover

    return FictitiousClassRemover.from_pretrained(args.model_name_or_path, revision=args.revision)


def _features(remover: Any, data: Any, split: str, args: argparse.Namespace, columns: Sequence[str]) -> Any:
    if split not in data:
        raise KeyError(f"the dataset has no split {split!r} (splits: {list(data)}).")
    return remover.extract_features(
        data[split],
        image_column=args.image_column,
        columns=tuple(columns),
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        progress=not args.json,
    )


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True) if args.json else text)


def _inspect(args: argparse.Namespace) -> int:
    from .core.scores import top_edges

    remover = _remover(args)
    feats = _features(remover, _dataset(args), args.split, args, [args.label_column])
    out, lines = {}, [f"{'class':<24}{'rank':>5}{'column':>8}{'weight':>12}{'SCA score':>14}"]
    weight = remover.head.weight.detach().cpu()
    for c in range(remover.num_classes):
        stats = remover.collect(feats, label_column=args.label_column, rows=[c])
        if int(stats.count[c]) == 0:
            continue
        edges = top_edges(stats, c, k=args.top, weight_row=weight[c], candidates=args.candidates)
        name = remover.class_names[c]
        out[name] = [{"row": c, "col": col, "weight": float(weight[c, col]), "score": s} for _, col, s in edges]
        for i, (_, col, score) in enumerate(edges):
            lines.append(f"{name[:23]:<24}{i + 1:>5}{col:>8}{float(weight[c, col]):>12.5g}{score:>14.5g}")
    _emit(args, out, "\n".join(lines))
    return 0


def _save(remover: Any, args: argparse.Namespace, command: str, **card_info: Any) -> str:
    """Save the edited model, or with --dry_run only say where it would go; returns the line to print."""
    if args.dry_run:
        return f"dry run: nothing written (would save to {args.output_dir})"
    remover.save_pretrained(
        args.output_dir, edits_only=args.edits_only, overwrite=args.overwrite, command=command, **card_info
    )
    return f"saved to {args.output_dir}"


def _remove_class(args: argparse.Namespace) -> int:
    remover = _remover(args)
    cls = remover.class_index(int(args.class_) if args.class_.lstrip("-").isdigit() else args.class_)
    feats = _features(remover, _dataset(args), args.split, args, [args.label_column])
    edits = remover.remove_class(
        cls, feats, label_column=args.label_column, r=args.r, num_weights=args.num_weights, candidates=args.candidates
    )
    saved = _save(remover, args, "hf-fcr " + " ".join(sys.argv[1:]))
    rows = [e.to_dict() for e in edits]
    text = "\n".join(f"{e.param}[{e.row}, {e.col}]: {e.old_value:.6g} -> {e.new_value:.6g} (r={e.r:g})" for e in edits)
    _emit(args, {"edits": rows, "output_dir": args.output_dir, "dry_run": args.dry_run}, text + "\n" + saved)
    return 0


def _neutralize(args: argparse.Namespace) -> int:
    from .core.metrics import format_table

    remover = _remover(args)
    data = _dataset(args)
    columns = [args.label_column, *([args.attribute_column] if args.attribute_column else [])]
    train = _features(remover, data, args.train_split, args, columns)
    val = _features(remover, data, args.validation_split, args, columns)
    search = remover.neutralize_spurious(
        train,
        val,
        label_column=args.label_column,
        attribute_column=args.attribute_column,
        rule=args.rule,
        seed=args.seed,
        method=args.method,
        diagnose=not args.no_diagnosis and args.attribute_column is not None,
    )
    import importlib.util

    plots = search.diagnosis is not None and importlib.util.find_spec("matplotlib") is not None  # the [demo] extra
    figures = {"diagnosis.png": search.diagnosis.plot()} if plots else {}
    saved = _save(remover, args, "hf-fcr " + " ".join(sys.argv[1:]), figures=figures)
    payload = {"choice": search.choice, "validation": {k: v for k, v in search.validation.items() if k != "sweep"}}
    if search.candidates:
        payload["candidates"] = search.candidates
    if search.diagnosis is not None:
        payload["diagnosis"] = search.diagnosis.to_dict()
    text = format_table({f"{search.method} (validation)": {**search.validation, "choice": search.choice}})
    if search.diagnosis is not None:
        text += "\n\ndiagnosis: " + search.diagnosis.verdict
    _emit(args, {**payload, "dry_run": args.dry_run}, text + "\n" + saved)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    remover = _remover(args)
    if not remover.edits:
        raise ValueError(f"{args.model_name_or_path} holds no hf-fcr edits to sweep: pass a folder saved by hf-fcr.")
    feats = _features(remover, _dataset(args), args.split, args, [args.label_column, *args.group_columns])
    result = remover.sweep(feats, label_column=args.label_column, group_columns=args.group_columns)
    best = result.best(args.rule)
    if args.output_dir and not args.dry_run:  # existing sweep files were refused (without --overwrite) by main()
        os.makedirs(args.output_dir, exist_ok=True)
        result.plot(os.path.join(args.output_dir, "sweep.png"), rule=args.rule)
        with open(os.path.join(args.output_dir, "sweep.json"), "w") as f:
            json.dump(result.table, f, indent=2)
    text = "\n".join(
        f"r={row['r']:<10.4g} average {100 * row['average']:5.1f}  worst {100 * row['worst_group']:5.1f}"
        for row in result.table[:: max(1, len(result.table) // 20)]
    )
    _emit(args, {"best": best, "table": result.table}, text + f"\nbest ({args.rule}): r={best['r']:.4g}")
    return 0


def _push(args: argparse.Namespace) -> int:
    """Upload a folder saved by hf-fcr as it is (its card keeps its evaluation table, model-index, title and
    reproduce command); a Hub id is loaded and saved first."""
    from .records.hub import check_artifact, upload_folder
    from .utils.constants import CARD_NAME

    source = args.model_name_or_path
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.isdir(source):
            record = check_artifact(source)  # validated before anything is uploaded
            folder = source
            if args.edits_only:  # the record, the new heads of head-level edits (not the base's) and the card
                folder = os.path.join(tmp, "edits")
                record.save_pretrained(folder, include_base=False)
                if os.path.isfile(os.path.join(source, CARD_NAME)):
                    shutil.copy(os.path.join(source, CARD_NAME), folder)
        else:
            folder = str(_remover(args).save_pretrained(os.path.join(tmp, "upload"), edits_only=args.edits_only))
        check_artifact(folder)  # what would be uploaded loads: the record and every file it needs
        files = sorted(os.listdir(folder))
        if args.dry_run:
            _emit(args, {"dry_run": True, "files": files}, f"dry run: would upload {files} to {args.hub_model_id}")
            return 0
        info = upload_folder(
            folder,
            args.hub_model_id,
            private=args.private or None,
            revision=args.hub_revision,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
        )
    url = str(getattr(info, "commit_url", info))
    _emit(args, {"commit_url": url, "files": files}, f"pushed {files}: {url}")
    return 0


def _shared() -> argparse.ArgumentParser:
    """Options every subcommand takes."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only (errors too)")
    p.add_argument(
        "--verbosity",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="logging level of hf_fcr and the libraries it calls (default: warning)",
    )
    return p


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model_name_or_path", required=True, help="timm / transformers checkpoint or hf-fcr folder: Hub id or path"
    )
    p.add_argument("--revision", default=None, help="the checkpoint's Hub revision (branch, tag or commit)")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset_name",
        required=True,
        help=f"Hub dataset id, a save_to_disk folder, or a built-in: {', '.join(BUILTIN_DATASETS)}",
    )
    p.add_argument("--dataset_seed", type=int, default=0, help="seed of a built-in dataset (default 0)")
    p.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    p.add_argument("--image_column", default="image", help="the column holding the images (default image)")
    p.add_argument("--label_column", default="label", help="the column holding the class labels (default label)")
    p.add_argument("--batch_size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--cache_dir", default=None, help="feature cache folder: a second run skips the backbone")


def _output_dir(p: argparse.ArgumentParser, required: bool, help: str) -> None:
    p.add_argument("--output_dir", default=None, help=help + (" (required)" if required else ""))
    p.add_argument("--output-dir", dest="output_dir", help=argparse.SUPPRESS)  # the spelling of earlier releases
    p.set_defaults(output_dir_required=required)


def _output(p: argparse.ArgumentParser) -> None:
    _output_dir(p, True, "folder for the edited model (its format, fcr_config.json and README.md card)")
    p.add_argument(
        "--edits_only",
        action="store_true",
        help="save only fcr_config.json, the card and the new heads of head-level edits",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output_dir if it holds an hf-fcr checkpoint (only then)",
    )
    p.add_argument("--dry_run", action="store_true", help="compute and print the edits, write nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-fcr", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hf-fcr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = [_shared()]

    demo = sub.add_parser(
        "demo",
        parents=shared,
        help="offline benchmark: ERM vs FCR vs DFR on SpuriousDigits (the main job)",
        description="Build SpuriousDigits (real sklearn digits on real skimage textures; the background colour "
        "agrees with the label in --correlation of the training set), train ERM, then compare FCR (policy, "
        "weights per class and r chosen on validation) and its controls, DFR, class-balanced retraining and auto "
        "on the balanced test split; print the diagnosis and save the model auto recommends.",
    )
    _output_dir(demo, True, "folder for results.json, the plots, the recommended model, FCR's edit and the ERM model")
    demo.add_argument("--seed", type=int, default=0, help="seed for the data split, training and DFR (default 0)")
    demo.add_argument("--correlation", type=float, default=0.95, help="label/background agreement in train")
    demo.add_argument("--epochs", type=int, default=30, help="ERM training epochs (default 30)")
    demo.add_argument(
        "--arch",
        default="test_resnet",
        help="timm architecture trained from scratch, efficientnet_lite0_pretrained (the packaged ImageNet "
        "EfficientNet-Lite0 frozen, with an ERM-trained head) or efficientnet_lite0_finetuned (its stem and first "
        "stages frozen, the rest trained by ERM)",
    )
    demo.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap", help="how r is chosen")
    demo.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    demo.set_defaults(func=_demo)

    p = sub.add_parser("inspect", parents=shared, help="top edges per class with their SCA scores (Eq. 6)")
    _model(p)
    _data(p)
    p.add_argument("--split", default="train", help="the split to score on (default train)")
    p.add_argument("--top", type=int, default=3, help="edges per class (default 3)")
    p.add_argument("--candidates", choices=("supporting", "all"), default="supporting", help="supporting edges or all")
    p.set_defaults(func=_inspect)

    p = sub.add_parser(
        "remove-class", parents=shared, help="Algorithm 1: remove a class by editing its best weight(s)"
    )
    _model(p)
    _data(p)
    _output(p)
    p.add_argument("--class", dest="class_", required=True, help="class index or name")
    p.add_argument("--split", default="train", help="the split to score on (default train)")
    p.add_argument("--r", type=float, default=1.0, help="neutralization rate in [0, 1] (Eq. 8; 1 is Eq. 7)")
    p.add_argument("--num_weights", type=int, default=1, help="weights edited in the class's row (default 1)")
    p.add_argument("--candidates", choices=("supporting", "all"), default="supporting", help="supporting edges or all")
    p.set_defaults(func=_remove_class)

    p = sub.add_parser(
        "neutralize", parents=shared, help="Algorithm 2: neutralize a spurious attribute, r chosen on validation"
    )
    _model(p)
    _data(p)
    _output(p)
    p.add_argument(
        "--attribute_column",
        default=None,
        help="the spurious attribute (fictitious classes, and the groups on validation); required by --method fcr "
        "and dfr, optional for class_balanced and auto (without it: worst-class accuracy, no diagnosis)",
    )
    p.add_argument("--train_split", default="train", help="the split M' is fit on (default train)")
    p.add_argument("--validation_split", default="validation", help="the split r is chosen on (default validation)")
    p.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap", help="how r is chosen")
    p.add_argument("--seed", type=int, default=0, help="seed of the controls, the head fits and auto's split")
    p.add_argument(
        "--method",
        default="fcr",
        help="fcr (one weight per class), dfr / class_balanced (retrain the head on group- / class-balanced "
        "validation data), a head-level method registered by a module in HF_FCR_PLUGINS, or auto (the best on "
        "held-out validation, fcr when within a point); default fcr",
    )
    p.add_argument(
        "--no_diagnosis",
        action="store_true",
        help="skip the diagnosis (FCR against a random-attribute control; its verdict goes into the card)",
    )
    p.set_defaults(func=_neutralize)

    p = sub.add_parser("sweep", parents=shared, help="accuracy of a saved edit at every r, in closed form (Figure 9)")
    _model(p)
    _data(p)
    p.add_argument("--split", default="test", help="the split to evaluate (default test)")
    p.add_argument("--group_columns", nargs="*", default=[], help="groups are (label, *group_columns)")
    p.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap", help="how the best r is marked")
    _output_dir(p, False, "write sweep.png and sweep.json here")
    p.add_argument("--overwrite", action="store_true", help="replace sweep.png / sweep.json in --output_dir")
    p.add_argument("--dry_run", action="store_true", help="print the sweep, write nothing")
    p.set_defaults(output_files=SWEEP_FILES)
    p.set_defaults(func=_sweep)

    p = sub.add_parser(
        "push", parents=shared, help="upload a folder saved by hf-fcr (or its edits only) to the Hub, as it is"
    )
    _model(p)
    p.add_argument("--hub_model_id", required=True, help="the Hub repo to upload to (org/name)")
    p.add_argument("--hub_revision", default=None, help="upload to this branch (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument(
        "--edits_only",
        action="store_true",
        help="upload only fcr_config.json, the card and the new heads of head-level edits",
    )
    p.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--commit_message", default="Upload model edited with hf-fcr", help="the commit message")
    p.add_argument("--dry_run", action="store_true", help="list the files that would be uploaded, upload nothing")
    p.set_defaults(func=_push)

    p = sub.add_parser(
        "studio",
        parents=shared,
        help="an interactive page: choose r, read the diagnosis, compare the fixes, save and push (extra [studio])",
        description="Serve the studio (Gradio) on --host:--port. Without --model_name_or_path it opens the built-in "
        "demo (SpuriousDigits, trained here, offline).",
    )
    p.add_argument("--model_name_or_path", default=None, help="timm / transformers checkpoint (default: the demo)")
    p.add_argument(
        "--dataset_name",
        default=None,
        help=f"Hub dataset id, a save_to_disk folder, or a built-in: {', '.join(BUILTIN_DATASETS)}",
    )
    p.add_argument("--label_column", default="label", help="the column holding the class labels (default label)")
    p.add_argument("--attribute_column", default="place", help="the spurious attribute's column (default place)")
    p.add_argument("--image_column", default="image", help="the column holding the images (default image)")
    p.add_argument("--train_split", default="train", help="where M' is fit (default train)")
    p.add_argument("--validation_split", default="validation", help="where r is chosen (default validation)")
    p.add_argument("--test_split", default="test", help="shown beside validation when present (default test)")
    p.add_argument("--cache_dir", default=None, help="feature cache folder: a second start skips the backbone")
    p.add_argument("--seed", type=int, default=0, help="seed of the demo, the search and the head fits (default 0)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument(
        "--save_root",
        default="studio-saves",
        help="the only folder the page may save under (default ./studio-saves); paths that leave it are refused",
    )
    p.add_argument(
        "--allow_server_token",
        action="store_true",
        help="let a push with an empty token field use this machine's login / HF_TOKEN (off: visitors type theirs)",
    )
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="a login for the page (Gradio's auth)")
    p.add_argument(
        "--i_understand_this_is_public",
        action="store_true",
        help="serve beyond 127.0.0.1 (or --share) without --auth: anyone who reaches the port can use the page",
    )
    p.set_defaults(func=_studio)
    return parser


def _studio(args: argparse.Namespace) -> int:
    try:
        from .studio.app import launch
    except ImportError as err:
        raise ImportError(f"hf-fcr studio needs Gradio: pip install 'hf-fcr[studio]' ({err})") from None
    from .studio import StudioSource
    from .studio.policy import StudioPolicy

    source = StudioSource(
        model_name_or_path=args.model_name_or_path,
        dataset_name=args.dataset_name,
        label_column=args.label_column,
        attribute_column=args.attribute_column,
        image_column=args.image_column,
        splits=(args.train_split, args.validation_split, args.test_split),
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth takes USER:PASSWORD (both non-empty).")
        auth = (user, password)
    policy = StudioPolicy(save_root=args.save_root, allow_server_token=args.allow_server_token)
    launch(
        source,
        host=args.host,
        port=args.port,
        share=args.share,
        policy=policy,
        auth=auth,
        public=args.i_understand_this_is_public,
    )
    return 0


SWEEP_FILES = ("sweep.png", "sweep.json")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _check_arguments(args: argparse.Namespace) -> str | None:
    """What the parser cannot check, before anything is computed: an --output_dir that would be overwritten
    without --overwrite (a non-empty folder; for sweep, its own files) or, with it, that holds something other than
    an hf-fcr checkpoint; an attribute the method needs."""
    out = getattr(args, "output_dir", None)
    if out and not getattr(args, "dry_run", False) and not getattr(args, "overwrite", False):
        if os.path.exists(out) and not os.path.isdir(out):
            return f"--output_dir {out} is a file: pass a folder"
        names = getattr(args, "output_files", None)
        fix = "pass --overwrite to replace it, or choose another folder"
        if names:  # sweep writes two files into a folder that may hold others
            clash = sorted(n for n in names if os.path.exists(os.path.join(out, n)))
            if clash:
                return f"--output_dir {out} already holds {', '.join(clash)}: {fix}"
        elif args.command != "demo" and os.path.isdir(out) and os.listdir(out):  # demo checks its own outputs
            return f"--output_dir {out} is not empty: {fix}"
    if out and not getattr(args, "dry_run", False) and getattr(args, "overwrite", False):
        if args.command != "demo" and not getattr(args, "output_files", None):  # a checkpoint folder is replaced
            from .records.hub import check_replaceable

            try:
                check_replaceable(out, overwrite=True, option="--overwrite")
            except FileExistsError as err:
                return f"--output_dir --overwrite: {err}"
    method = getattr(args, "method", None)
    needs_column = False
    if method is not None:
        from .fitting.methods import AUTO, get_method

        try:
            found = None if method == AUTO else get_method(method)
        except ValueError as err:
            return f"--method: {err}"
        needs_column = found is not None and (found.needs_groups or found.needs_attribute)
    if needs_column and not getattr(args, "attribute_column", None):
        return f"--method {method} needs --attribute_column (class_balanced and auto work without it)"
    return None


PLUGINS_VARIABLE = "HF_FCR_PLUGINS"


def _import_plugins() -> None:
    """Import the modules named in ``HF_FCR_PLUGINS`` (comma-separated), which register head-level methods and
    scores. A plugin is code run with your rights; modules resolve from the working folder first, as ``python -m``
    would. Anything a plugin raises on import (a syntax error, ``SystemExit``) becomes an ImportError naming it."""
    import importlib

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as err:  # any failure of user code is reported, not raised
            raise ImportError(
                f"{PLUGINS_VARIABLE} names {name!r}, which cannot be imported: {type(err).__name__}: {err}"
            ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    wants_json = "--json" in (sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
        if getattr(args, "output_dir_required", False) and args.output_dir is None:
            _subparser(parser, args.command).error("the following arguments are required: --output_dir")
    except SystemExit as exit_:
        if wants_json and exit_.code not in (0, None):  # a usage error: scripts reading stdout still get JSON
            print(json.dumps({"error": {"type": "UsageError", "message": "invalid arguments (see stderr)"}}))
        raise
    try:
        _import_plugins()
    except ImportError as err:
        problem = str(err)
    else:
        problem = _check_arguments(args)
    if problem is not None:  # refused before any computation
        try:
            _subparser(parser, args.command).error(problem)
        except SystemExit:
            if wants_json:
                print(json.dumps({"error": {"type": "UsageError", "message": problem}}))
            raise
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(args.verbosity.upper())
    demo = args.command == "demo" or (args.command == "studio" and not args.model_name_or_path)
    if demo or getattr(args, "dataset_name", None) in BUILTIN_DATASETS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline jobs never try the network
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        return args.func(args)
    except Exception as err:  # every failure: a message on stderr, and with --json a JSON error on stdout
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"hf-fcr {args.command}: error: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": {"type": type(err).__name__, "message": message}}))
        return 2 if isinstance(err, (ValueError, KeyError, TypeError, OSError)) else 1


if __name__ == "__main__":
    sys.exit(main())
