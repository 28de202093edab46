"""``clip-dinoiser-export``: the per-frame graph for one camera size as ONNX, for TensorRT, Jetson and ONNX Runtime.

The camera's size and the short side are resolved to the padded grid exactly as the engine resizes
(whole mode), or to one window (slide mode). Writes OUT (.onnx) and its sidecar (OUT with .json), and
prints the inputs, the outputs and a trtexec command that builds an fp16 engine with LayerNorm in fp32.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from clip_dinoiser_ros.cli.node_options import GRAPH, parse_node_options
from clip_dinoiser_ros.cli.model_options import SetupError, add_model_arguments, load_engine
from clip_dinoiser_ros.extras import missing_extra
from clip_dinoiser_ros.visualization import RANDOM_NOTICE

TRT_SYNONYMS = (1, 32, 256)  # min, opt, max rows of text_embeddings for a TensorRT optimisation profile
TRT_MAX_BATCH = 4


def camera_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 480x640") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be positive")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-dinoiser-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=camera_size, required=True, metavar="HxW",
                        help="the camera's image size, e.g. 480x640")
    parser.add_argument("--window", type=int, default=448, help="slide mode: the window side (the paper's 448)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file (its sidecar: the same name, .json)")
    parser.add_argument("--prompts", nargs="+", help="also write these classes' text embeddings (OUT.text.npy, "
                        "float32 (S, E)) and their classes (OUT.classes.json): the graph's second input, for a "
                        "runtime without PyTorch")
    add_model_arguments(parser, GRAPH)
    return parser


def graph_size(args: argparse.Namespace, patch_size: int) -> tuple[int, int]:
    """The padded input the ViT sees for this camera: the whole resized frame, or one window of it."""
    from clip_dinoiser_ros.model.patch_graph import padded, padded_size
    from clip_dinoiser_ros.model.preprocessing import short_side_size

    if args.mode == "whole":
        return padded_size(*args.size, args.short_side, patch_size)
    height, width = short_side_size(*args.size, args.short_side)
    return padded((min(args.window, height), min(args.window, width)), patch_size)


def weights_record(args: argparse.Namespace) -> dict[str, Any]:
    """What the sidecar says of the weights: names, and the files' sha256 where they are files."""
    from clip_dinoiser_ros.model.build import RANDOM_SEED
    from clip_dinoiser_ros.model.heads_download import resolve_heads, sha256_of

    if args.random_weights:
        return {"clip_model": args.clip_model, "random_weights": True, "seed": RANDOM_SEED}
    record: dict[str, Any] = {"clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained,
                              "heads": args.heads}
    for name, path in (("clip_pretrained", Path(args.clip_pretrained)), ("heads", resolve_heads(args.heads))):
        if path.is_file():
            record[f"{name}_file"], record[f"{name}_sha256"] = str(path), sha256_of(path)
    return record


def trtexec_command(onnx_path: Path, sidecar: dict[str, Any]) -> str:
    """An fp16 engine with the LayerNormalizations the sidecar names kept in fp32 (a known fp16 overflow
    spot in ViTs), as the onnxruntime backend's TensorRT sessions do."""
    norms = sidecar["layer_norms"] if sidecar.get("layer_norm_fp32") else []
    _, channels, height, width = sidecar["inputs"]["pixels"]
    embedding = sidecar["inputs"]["text_embeddings"][1]
    shapes = {
        kind: f"pixels:{batch}x{channels}x{height}x{width},text_embeddings:{synonyms}x{embedding}"
        for kind, batch, synonyms in zip(("min", "opt", "max"), (1, 1, TRT_MAX_BATCH), TRT_SYNONYMS)
    }
    return (f"trtexec --onnx={onnx_path} --saveEngine={onnx_path.with_suffix('.plan')} --fp16 "
            f"--minShapes={shapes['min']} --optShapes={shapes['opt']} --maxShapes={shapes['max']} "
            f"--precisionConstraints=obey --layerPrecisions={','.join(f'{name}:fp32' for name in norms)}")


def write_vocabulary(engine, prompts: Sequence[str], onnx_path: Path) -> dict[str, str]:
    """The text input for ``prompts`` and how its rows map to classes; returns the files' names."""
    vocabulary = engine.set_prompts(prompts)
    text, classes = onnx_path.with_suffix(".text.npy"), onnx_path.with_suffix(".classes.json")
    np.save(text, vocabulary.text_embeddings.numpy().astype(np.float32))
    classes.write_text(json.dumps({"classes": list(vocabulary.names),
                                   "synonym_to_class": vocabulary.synonym_to_class.tolist(),
                                   "synonyms": [s for c in vocabulary.classes for s in c.synonyms]}, indent=2) + "\n")
    return {"file": text.name, "classes": classes.name}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_node_options(build_parser(), argv)
    missing = missing_extra("onnx")
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    if args.prompts:
        from clip_dinoiser_ros.model.vocabulary import parse_prompts

        try:
            parse_prompts(args.prompts)
        except ValueError as error:
            print(f"error: --prompts: {error}", file=sys.stderr)
            return 2
    if args.random_weights:
        print(RANDOM_NOTICE, file=sys.stderr)
    try:
        engine = load_engine(args)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from clip_dinoiser_ros.model.onnx_export import export_graph, write_sidecar

    size = graph_size(args, engine.patch_size)
    print(f"{args.size[0]}x{args.size[1]} at short side {args.short_side} ({args.mode}): graph input {size[0]}x{size[1]}",
          file=sys.stderr)
    from clip_dinoiser_ros.model.fingerprint import GRAPH_PARTS

    sidecar = export_graph(engine.encoder, engine.heads, engine.gamma, size, args.out, engine.fingerprint(GRAPH_PARTS),
                           weights=weights_record(args))
    sidecar["trtexec"] = trtexec_command(args.out, sidecar)
    if args.prompts:
        sidecar["text_embeddings"] = write_vocabulary(engine, args.prompts, args.out)
    write_sidecar(args.out, sidecar)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} (opset {sidecar['opset']})")
    print(f"inputs: {sidecar['inputs']}\noutputs: {sidecar['outputs']}")
    print(f"TensorRT (fp16, LayerNorm in fp32):\n  {sidecar['trtexec']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
