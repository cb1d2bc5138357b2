"""`export onnx`: write a checkpoint's detector as an ONNX file (standard ops only), optionally checked."""

from __future__ import annotations

from pathlib import Path

from .options import add_run_options, apply_threads, output_file

ONNX_FILE = "model.onnx"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to another format (onnx)",
        description="Export a checkpoint's detector for other runtimes.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="ONNX file: images (B,3,H,W) [+ padding_mask] -> pred_logits, pred_boxes",
        description="Write the eval() detector as ONNX with standard ops only (deformable attention as "
        "Gather + MatMul bilinear sampling, no GridSample). Inputs: images (B,3,H,W) float32 "
        "normalized, padding_mask (B,H,W) bool True = padding; outputs pred_logits (B,Lq,K), "
        "pred_boxes (B,Lq,4) cx,cy,w,h in [0,1]. The file's metadata holds the preprocessing and "
        "categories.",
    )
    onnx.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        metavar="CKPT",
        help="weights: a training checkpoint (or its run folder), save_pretrained folder, official .pth "
        "or Hugging Face folder",
    )
    onnx.add_argument("--out", required=True, type=Path, metavar="DIR", help=f"output folder: writes DIR/{ONNX_FILE}")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset, 14..20 (default 17)")
    onnx.add_argument("--dynamic", action="store_true", help="free batch size, height and width (else fixed)")
    onnx.add_argument(
        "--height",
        type=int,
        default=None,
        help="traced (and, without --dynamic, fixed) height (default: the model's min_size, e.g. 800)",
    )
    onnx.add_argument(
        "--width",
        type=int,
        default=None,
        help="traced (and, without --dynamic, fixed) width (default: 4/3 of the height up to max_size, e.g. 1066)",
    )
    onnx.add_argument(
        "--batch-size", type=int, default=1, help="traced (and, without --dynamic, fixed) batch (default 1)"
    )
    add_run_options(onnx, batch_size=False, amp=False)  # --batch-size above is the traced batch; ONNX is float32
    onnx.add_argument(
        "--no-padding-mask",
        dest="padding_mask",
        action="store_false",
        help="one input only (images); every pixel is valid",
    )
    onnx.add_argument(
        "--verify",
        action="store_true",
        help="run the file with onnxruntime and print max |difference| vs PyTorch (two image sizes with --dynamic)",
    )
    onnx.add_argument("--overwrite", action="store_true", help=f"replace an earlier {ONNX_FILE} in --out")
    onnx.set_defaults(handler=_export_onnx)


def _export_onnx(args) -> None:
    from ..inference.load import load
    from ..interop.onnx import export_onnx, verification_sizes, verify_onnx
    from ..util.devices import checked_device

    path = output_file(args.out, ONNX_FILE, args.overwrite)  # before loading the weights
    apply_threads(args.threads)
    model = load(args.checkpoint, device=checked_device(args.device))
    if args.height is None:  # a 4:3 landscape photo at the model's own preprocessing size
        args.height = model.preprocess.min_size
    if args.width is None:
        args.width = min(args.height * 4 // 3, model.preprocess.max_size)
    args.out.mkdir(parents=True, exist_ok=True)
    path = export_onnx(
        model,
        path,
        opset=args.opset,
        dynamic=args.dynamic,
        batch_size=args.batch_size,
        height=args.height,
        width=args.width,
        padding_mask=args.padding_mask,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, "
        f"{'dynamic batch and size' if args.dynamic else f'fixed {args.batch_size}x3x{args.height}x{args.width}'})"
    )
    if args.verify:
        batch_size = 2 if args.dynamic else args.batch_size
        for row in verify_onnx(model, path, verification_sizes(args.height, args.width, args.dynamic), batch_size):
            print(
                f"verify {row['batch_size']}x3x{row['height']}x{row['width']}: max |onnxruntime - PyTorch| "
                f"pred_logits {row['pred_logits']:.2e}, pred_boxes {row['pred_boxes']:.2e}"
            )
