"""Sweep the Triton launch parameters on a GPU: (BLOCK_Q, num_warps) per case, eager and CUDA-graph timings.

Run on a CUDA machine from the repository root: `PYTHONPATH=src python benchmarks/triton_tune.py` (with the reference
implementation's op importable as `MultiScaleDeformableAttention` it is timed too). Writes `$OUT/tune_triton.json` (or
/tmp). The sweep behind `ops/triton_launch.py`'s `MIN_PROGRAMS`: benchmarks/results/triton_tune_gpu.json (H200, Triton 3.6).
"""

import json
import os

import torch
import triton
from triton.testing import do_bench

from deformable_detr.bench.op_triton import make_inputs
from deformable_detr.ops import triton as tb
from deformable_detr.ops import triton_launch

try:
    import MultiScaleDeformableAttention as official
except ImportError:
    official = None


def graphed(fn):
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return lambda: g.replay()


def bench(fn):
    return do_bench(fn, warmup=10, rep=40, return_mode="median")


rows = []
orig_block, orig_warps = triton_launch.block_sizes, triton_launch.NUM_WARPS
for case in ("decoder", "encoder"):
    for dtype in (torch.float32, torch.bfloat16):
        inputs = make_inputs(case, "realistic", dtype, torch.device("cuda"))
        B, S, M, D = inputs[0].shape
        Lq = inputs[3].shape[1]
        g = torch.randn(B, Lq, M * D, device="cuda", dtype=dtype)
        ref = tb.forward(*inputs).float()
        if official is not None and dtype == torch.float32:

            def f():
                return official.ms_deform_attn_forward(*inputs, 64)

            def fb():
                return (official.ms_deform_attn_forward(*inputs, 64), official.ms_deform_attn_backward(*inputs, g, 64))

            rows.append(
                dict(
                    case=case,
                    dtype=str(dtype),
                    impl="official",
                    fwd=bench(f),
                    fwdbwd=bench(fb),
                    fwd_graph=bench(graphed(f)),
                    fwdbwd_graph=bench(graphed(fb)),
                )
            )
            print(rows[-1], flush=True)
        for block_q in (8, 16, 32, 64):
            for warps in (1, 2, 4):
                triton_launch.block_sizes = lambda *a, bq=block_q: (bq, triton.next_power_of_2(a[-1]))
                triton_launch.NUM_WARPS = warps
                try:
                    out = tb.forward(*inputs).float()
                    err = (out - ref).abs().max().item()

                    def f():
                        return tb.forward(*inputs)

                    def fb():
                        return (tb.forward(*inputs), tb.backward(g, *inputs))

                    row = dict(
                        case=case,
                        dtype=str(dtype),
                        impl="triton",
                        block_q=block_q,
                        warps=warps,
                        err=err,
                        fwd=bench(f),
                        fwdbwd=bench(fb),
                        fwd_graph=bench(graphed(f)),
                        fwdbwd_graph=bench(graphed(fb)),
                    )
                except Exception as e:
                    row = dict(
                        case=case, dtype=str(dtype), impl="triton", block_q=block_q, warps=warps, error=str(e)[:200]
                    )
                rows.append(row)
                print(row, flush=True)
        triton_launch.block_sizes, triton_launch.NUM_WARPS = orig_block, orig_warps
out = os.environ.get("OUT", "/tmp")
json.dump(rows, open(os.path.join(out, "tune_triton.json"), "w"), indent=1)
