"""``stablecnn export-onnx | import-onnx``: models to and from ONNX (see :mod:`stablecnn.interop`).

Both need the optional onnx package (``pip install "stablecnn[onnx]"``); without it they stop
with that command as the error. ``export-onnx --verify`` also needs onnxruntime.

Every conversion command (these two, ``export-pickle`` and ``import-pickle``) checks its output
with :func:`check_output` before any work: a file that exists is replaced only with
``--overwrite``, and a path that cannot be written is refused naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

from stablecnn.cli.argtypes import positive_int
from stablecnn.errors import ConfigError

TOLERANCE = 1e-5  # --verify: the largest relative difference onnxruntime may show


def add_parser(subparsers) -> None:
    """Register ``export-onnx`` and ``import-onnx`` on the ``stablecnn`` command line."""
    from stablecnn.interop.common import DEFAULT_OPSET

    p = subparsers.add_parser(
        "export-onnx",
        help="write a checkpoint as an ONNX model (onnxruntime, Netron, browsers)",
        description="Export a checkpoint (.npz or run directory) to ONNX. The model takes "
        "float32 pixels in [0, 255] shaped (N, C, H, W), any batch size N, and normalises them "
        "itself as in training; it outputs the logits (the probabilities with --softmax). The "
        "class names, the dataset and stablecnn's version are in its metadata. Needs the onnx "
        'package: pip install "stablecnn[onnx]". An existing MODEL.onnx is refused unless '
        "--overwrite; so is a missing folder, before anything is read.",
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint .npz or a run directory")
    p.add_argument("out", type=Path, metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace MODEL.onnx if it exists (atomically)"
    )
    p.add_argument(
        "--opset",
        type=positive_int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset (default {DEFAULT_OPSET}; 13 to the newest the installed onnx knows)",
    )
    p.add_argument(
        "--softmax", action="store_true", help="output the probabilities instead of the logits"
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="keep a float64 model's weights in float64 (default: float32, what runtimes run; "
        "refused for a float32 checkpoint, which it would only widen; onnxruntime's CPU "
        "provider has no float64 Conv, so --verify with it is refused before anything is read "
        "or written)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="run the export in onnxruntime on the test set the checkpoint was trained on and "
        f"compare with stablecnn: exit status 1 unless every class agrees and the largest "
        f"difference is within {TOLERANCE:g} relative (needs onnxruntime, checked before "
        "anything is written)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="with --verify: the folder of the test set (default: the run's)",
    )
    p.set_defaults(func=cmd_export_onnx)

    p = subparsers.add_parser(
        "import-onnx",
        help="convert an ONNX model (e.g. from PyTorch) into a model file and checkpoint",
        description="Import an ONNX model into stablecnn: OUT/model.json (its model file, "
        "which train --model trains afresh from new weights) and OUT/checkpoint.npz (its "
        "weights, which predict, evaluate, serve, summary and export-onnx read; not a training "
        "run, so train --resume refuses it). The "
        "supported ops are those stablecnn's layers compute (Conv, MaxPool, AveragePool, "
        "GlobalAveragePool, Gemm, MatMul, Relu, LeakyRelu, Flatten, BatchNormalization, "
        "Dropout, Add joining a residual block); anything else is refused, naming the node, "
        "the op and the attribute. Nothing in the file is executed; external data is read only "
        'from the file\'s own folder. Needs the onnx package: pip install "stablecnn[onnx]". '
        "An existing OUT/model.json or OUT/checkpoint.npz is refused unless --overwrite.",
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX file to import")
    p.add_argument(
        "out",
        type=Path,
        nargs="?",
        metavar="OUT",
        help="the folder to write (default: ./<MODEL>-imported)",
    )
    p.add_argument(
        "--mean",
        metavar="M[,M,M]",
        help="for a graph that takes normalised inputs: the mean pixel value (0-255) to "
        "subtract, one or one per channel (e.g. 33.3285 for MNIST's 0.1307 * 255)",
    )
    p.add_argument(
        "--std",
        metavar="S[,S,S]",
        help="with --mean: the std (in pixel units) to divide by (e.g. 78.5655 = 0.3081 * 255)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT's model.json and checkpoint.npz if they exist (atomically)",
    )
    p.set_defaults(func=cmd_import_onnx)


def check_output(path: Path, overwrite: bool, other: str, make_folder: bool = False) -> None:
    """Refuse, before a command does any work, an output file it could not write or would
    replace unasked. ``other`` is how the user names another output (``"MODEL.onnx"``, ``"with
    -o"``); with ``make_folder`` the command makes the missing folders itself.

    Raises:
        ConfigError: ``path`` is a directory; its folder does not exist (without ``make_folder``)
            or is a file; ``path`` exists and ``overwrite`` is false.
    """
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory")
    problem = _folder_problem(path.parent, make_folder)
    if problem:
        raise ConfigError(f"cannot write {path}: {problem}")
    if os.path.lexists(path) and not overwrite:
        raise ConfigError(f"{path} exists; name another {other} or add --overwrite")


def _folder_problem(folder: Path, make_folder: bool) -> str | None:
    if folder.is_dir() or folder.parent == folder:
        return None
    if folder.exists():
        return f"{folder} is not a folder"
    if not make_folder:
        return f"the folder {folder} does not exist"
    return _folder_problem(folder.parent, make_folder)


def cmd_export_onnx(args) -> int:
    from stablecnn.interop import export_onnx
    from stablecnn.interop.common import require_onnxruntime
    from stablecnn.training import checkpoint

    if args.verify and args.float64:
        raise ConfigError(
            "--verify runs the export in onnxruntime, whose CPU provider has no float64 Conv: "
            "verify a float32 export (without --float64), or export in float64 without "
            "--verify; nothing was written"
        )
    check_output(args.out, args.overwrite, "MODEL.onnx")
    if args.verify:
        require_onnxruntime()
    ckpt = checkpoint.load(args.checkpoint)
    if args.float64 and ckpt.meta["dtype"] != "float64":
        raise ConfigError(
            f"--float64 keeps a float64 model's weights in float64, and {args.checkpoint} holds "
            f"{ckpt.meta['dtype']} weights, which it would only widen: export without --float64; "
            f"nothing was written"
        )
    test_set = _test_set(args, ckpt) if args.verify else None
    dtype = "float64" if args.float64 else "float32"
    done = export_onnx(ckpt, args.out, opset=args.opset, softmax=args.softmax, dtype=dtype)
    shape = ", ".join(map(str, done.input_shape[1:]))
    norm = done.normalizer
    if norm is None:
        how = "the checkpoint has no normalizer: the input is used as it is"
    else:
        how = f"normalised in the graph by (x - {_numbers(norm['mean'])}) / {_numbers(norm['std'])}"
    print(
        f"wrote {done.path} (opset {done.opset}, {done.nbytes / 1e6:.1f} MB): input "
        f"'pixels' {dtype} (N, {shape}) in [0, 255], {how}; output '{done.output_name}' "
        f"(N, {', '.join(map(str, done.output_shape[1:]))})"
    )
    if not args.verify:
        return 0
    return _verify(args, ckpt, done, *test_set)


def _test_set(args, ckpt) -> tuple[str, object]:
    """``--verify``'s dataset name and test images, read before the export is written."""
    from stablecnn.data import load_dataset
    from stablecnn.training.resume import run_data_source

    if ckpt.meta.get("normalizer") is None:
        raise ConfigError("--verify needs the checkpoint's normalizer, and it has none")
    dataset, data_dir, verify = run_data_source(ckpt.meta, None, args.data_dir)
    images, _ = load_dataset(dataset, "test", data_dir=data_dir, verify=verify, quiet=True)
    return dataset, images


def _verify(args, ckpt, done, dataset, images) -> int:
    from stablecnn.data import Normalizer
    from stablecnn.interop import compare_onnxruntime

    model = ckpt.build_model()
    agreement = compare_onnxruntime(
        model, Normalizer.from_dict(done.normalizer), done.path, images, softmax=args.softmax
    )
    ok = agreement.same_class == agreement.images and agreement.max_relative <= TOLERANCE
    verdict = "agrees" if ok else "DISAGREES"
    print(f"onnxruntime {verdict} with stablecnn on the {dataset} test set, {agreement}")
    if agreement.different:
        print(f"images whose class differs: {agreement.different}")
    return 0 if ok else 1


def _numbers(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}"


def _channel_values(text: str | None, option: str) -> float | tuple | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes numbers separated by commas, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def cmd_import_onnx(args) -> int:
    from stablecnn.data import Normalizer
    from stablecnn.interop import import_onnx

    mean, std = _channel_values(args.mean, "--mean"), _channel_values(args.std, "--std")
    if (mean is None) != (std is None):
        raise ConfigError("--mean and --std go together: give both or neither")
    normalizer = Normalizer(mean, std, "original") if mean is not None else None
    out = args.out or Path(f"{args.model.stem}-imported")
    for name in ("checkpoint.npz", "model.json"):
        check_output(out / name, args.overwrite, "OUT", make_folder=True)
    imported = import_onnx(args.model, normalizer=normalizer)
    model_path, ckpt_path = imported.save(out, overwrite=args.overwrite)
    model = imported.model
    print(
        f"imported {args.model}: {len(model.layers)} layers, {model.num_params:,} parameters "
        f"({model.dtype}), input (N, {', '.join(map(str, model.input_shape))}); wrote "
        f"{model_path} and {ckpt_path}"
    )
    for note in imported.notes:
        print(f"note: {note}")
    print(f"next: stablecnn summary {out}   or   stablecnn predict {out} PICTURE")
    return 0
