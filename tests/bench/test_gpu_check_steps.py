"""The gpu-check steps' benchmark commands are ones the CLI accepts (a typo must not wait for the GPU run)."""

import pytest

from deformable_detr.bench import gpu_check_steps


@pytest.mark.parametrize("smoke", [False, True], ids=["cuda", "smoke"])
def test_every_benchmark_command_is_one_the_cli_accepts(smoke, tmp_path):
    """No typo can wait for the GPU run: each step's arguments parse with the real `deformable-detr` parser."""
    from deformable_detr.cli import build_parser

    parser = build_parser()
    predict_options = parser.parse_args(["bench", "predict", "--out", "x.json"])
    for step in gpu_check_steps.BENCH_ARGS:
        if step == "predict" and not hasattr(predict_options, "device"):
            continue  # this checkout's bench predict has no --device: the step is skipped (see step_predict)
        args = parser.parse_args(["bench", *gpu_check_steps.bench_args(step, smoke, tmp_path), "--out", "x.json"])
        assert args.target == step and getattr(args, "smoke", False) == smoke
        if step != "op-triton":  # no --device: CUDA, or the CPU interpreter for --smoke without a GPU
            assert args.device == ("cpu" if smoke else "cuda")
