"""Compiled inference (models/compiled.py).

The fast tests replace torch.compile by the identity (`no_compile`): they check what the compiler cannot
change, that the bucketed, padded inputs give every image its own outputs (the oracle: `forward_unpadded`
of the image alone), and the runner's bookkeeping. A `slow` test compiles for real on the CPU; `gpu`
tests compile with CUDA graphs.
"""

import concurrent.futures
import inspect
import warnings

import numpy as np
import pytest
import torch

from deformable_detr.errors import BackendError, ConfigError
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.pipeline import compiled
from deformable_detr.pipeline.buckets import image_bucket, level_sizes, level_strides
from deformable_detr.pipeline.compiled import CompiledInference, compile_inference
from deformable_detr.pipeline.processor import PreprocessConfig
from deformable_detr.pipeline.run import forward_unpadded, level_maps, pad_levels

# (h, w) of preprocessed images: every one pads to the bucket 128x448 (step 64), none fills it. At least 400 px
# wide, so two-stage models are padding-invariant too: padded proposals are masked like the border proposals
# of a level-0 map >= 50 px wide (centre within 0.01 of the edge), and get the same score; an image alone then
# has at least as many of them (2 x 12 rows) as queries (8) that score could win. (At the paper's 800 px an
# image always has 694 >= 300; a tiny image has none, and its top-k could differ from a padded copy's.)
SIZES = [(96, 420), (96, 400), (70, 440), (80, 410), (128, 430)]


@pytest.fixture
def no_compile(monkeypatch):
    """torch.compile as the identity: the runner's bucketing, padding and bookkeeping, uncompiled."""
    monkeypatch.setattr(compiled, "_compile", lambda function, **options: function)


def _model(config) -> DeformableDETR:
    """Random weights, every parameter perturbed: the zero-initialised last box-head layers would otherwise
    make the boxes independent of the image, and padding mistakes invisible."""
    torch.manual_seed(0)
    model = DeformableDETR(config, preprocess=PreprocessConfig(min_size=96, max_size=160)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def _tensors(sizes=SIZES) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(3, h, w, generator=generator) for h, w in sizes]  # (3, h, w) normalized pixels


def _alone(model, tensors) -> list[dict]:
    with torch.inference_mode():
        return [forward_unpadded(model, [tensor]) for tensor in tensors]


def _assert_equal_alone(out, alone, logits_atol, boxes_atol):
    for index, expected in enumerate(alone):
        torch.testing.assert_close(out["pred_logits"][index], expected["pred_logits"][0], rtol=0, atol=logits_atol)
        torch.testing.assert_close(out["pred_boxes"][index], expected["pred_boxes"][0], rtol=0, atol=boxes_atol)


def test_bucketed_outputs_equal_each_image_alone_for_every_variant(variant_config, no_compile, one_thread):
    """fp32: only float rounding differs (different GEMM and reduction shapes); observed <= 1.5e-6 on logits
    and 1.2e-7 on the normalized boxes, allowed 1e-5 and 1e-6."""
    model = _model(variant_config)
    tensors = _tensors()
    alone = _alone(model, tensors)
    runner = CompiledInference(model)
    with torch.inference_mode():  # as `predict` calls it
        batched = runner(tensors)
        single = runner(tensors[:1])
    assert runner.buckets == [(128, 448)]  # all five padded to one bucket, larger than each of them
    _assert_equal_alone(batched, alone, 1e-5, 1e-6)
    _assert_equal_alone(single, alone[:1], 1e-5, 1e-6)
    assert [(r["image_bucket"], r["batch"], r["amp"]) for r in runner.compiles] == [
        ([128, 448], ">=2", False),
        ([128, 448], "1", False),
    ]


def test_the_same_padding_unmasked_would_change_the_outputs(make_config, one_thread):
    """The check above can fail: the bucket's padding, if it were not masked, moves the logits."""
    model = _model(make_config())
    tensors = _tensors()[:2]
    with torch.no_grad():
        per_image = level_maps(model, tensors)
        actual = [tuple(source.shape[-2:]) for source in per_image[0]]
        strides = level_strides(model.backbone.strides, len(actual))
        sources, masks = pad_levels(per_image, level_sizes(image_bucket(96, 420, 64), strides, actual))
        unmasked = model.detect(sources, [torch.zeros_like(mask) for mask in masks])
    alone = _alone(model, tensors[:1])[0]
    assert (unmasked["pred_logits"][0] - alone["pred_logits"][0]).abs().max() > 1e-3


def test_predict_through_compile_inference_equals_eager_predict(make_config, no_compile, one_thread):
    """The README's batched tolerances (boxes 1e-3 px, scores 1e-6) in fp32; bf16 autocast as `test_predict`'s."""
    model = _model(make_config())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 70), (80, 60), (33, 90), (64, 64)]]
    eager = model.predict(images, threshold=0.0, batch_size=3)
    eager_bf16 = model.predict(images, threshold=0.0, batch_size=3, amp=True)
    eager_first = model.predict(images[0], threshold=0.0)[0]
    assert compile_inference(model) is model
    fast = model.predict(images, threshold=0.0, batch_size=3)
    fast_bf16 = model.predict(images, threshold=0.0, batch_size=3, amp=True)
    for expected, got in zip(eager, fast):
        assert got.labels.tolist() == expected.labels.tolist() and got.image_size == expected.image_size
        torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.boxes, expected.boxes, rtol=0, atol=1e-3)
    for expected, got in zip(eager_bf16, fast_bf16):
        torch.testing.assert_close(got.scores.sort().values, expected.scores.sort().values, rtol=0.05, atol=1e-3)
    assert {r["amp"] for r in model.compiled_inference.compiles} == {False, True}
    assert model.compiled_inference.summary().startswith("torch.compile (default, cpu): 4 shape(s) [")
    model.compiled_inference = None  # back to eager
    torch.testing.assert_close(model.predict(images[0], threshold=0.0)[0].scores, eager_first.scores, rtol=0, atol=0)


def test_past_max_buckets_a_batch_runs_in_a_bucket_that_holds_it_or_uncompiled(make_config, no_compile, one_thread):
    model = _model(make_config())
    runner = CompiledInference(model, max_buckets=1)
    tensors = _tensors([(96, 128), (100, 100), (130, 100)])
    alone = _alone(model, tensors)
    with torch.inference_mode():
        first = runner(tensors[:1])  # opens the bucket 128x128
        fits = runner(tensors[1:2])  # 128x128 again
        with pytest.warns(RuntimeWarning, match=r"none holds a 130x100 batch, so it runs uncompiled"):
            too_tall = runner(tensors[2:])  # its own bucket 192x128 would be a second one
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            runner(tensors[2:])
    assert runner.buckets == [(128, 128)] and len(runner.compiles) == 1
    for out, expected in zip((first, fits, too_tall), alone):
        _assert_equal_alone(out, [expected], 1e-5, 1e-6)


def test_warm_up_compiles_the_common_shape_at_batch_1_and_2(make_config, no_compile, one_thread):
    model = _model(make_config())
    model.train()
    runner = CompiledInference(model, compile_backbone=False)
    seconds = runner.warm_up(batch_sizes=(1, 2), amp=True)
    assert seconds > 0 and model.training  # mode restored
    # a 480x640 photo resized by the model (96 px shorter side) is 96x128: bucket 128x128
    assert [(r["image_bucket"], r["batch"], r["amp"]) for r in runner.compiles] == [
        ([128, 128], "1", True),
        ([128, 128], ">=2", True),
    ]


def test_options_are_checked_and_a_moved_model_is_refused(make_config, no_compile):
    model = _model(make_config())
    with pytest.raises(ConfigError, match=r"bucket_px must be an integer >= 1, got 0"):
        compile_inference(model, bucket_px=0)
    with pytest.raises(ConfigError, match=r"max_buckets must be an integer >= 1, got 2.5"):
        compile_inference(model, max_buckets=2.5)
    compile_inference(model)
    model.to("meta")
    with pytest.raises(ConfigError, match=r"moved from cpu to meta after compile_inference; call compile_inference"):
        model.predict(np.zeros((40, 40, 3), dtype=np.uint8))


def _failing_compile(which: set[str]):
    """A `_compile` whose compiled functions named in `which` ("image_features", "_detect_outputs") fail as
    inductor does (e.g. without a C++ compiler); the others run uncompiled."""
    failure = torch._dynamo.exc.BackendCompilerFailed
    extra = [None] * (len(inspect.signature(failure.__init__).parameters) - 3)  # newer torch: first_useful_frame

    def compile_(function, **options):
        if function.__name__ not in which:
            return function

        def run(*args, **kwargs):
            raise failure(compile_, RuntimeError("no C++ compiler found\ndetails"), *extra)

        return run

    return compile_


def test_a_compiler_failure_is_one_line(make_config, monkeypatch, one_thread):
    monkeypatch.setattr(compiled, "_compile", _failing_compile({"image_features", "_detect_outputs"}))
    model = compile_inference(_model(make_config()))
    with (
        pytest.warns(RuntimeWarning, match=r"compiling the backbone failed on cpu \(RuntimeError: no C\+\+ compiler"),
        pytest.raises(
            BackendError,
            match=r"^torch.compile failed on cpu \(RuntimeError: no C\+\+ compiler found\); run without compile",
        ),
    ):
        model.predict(np.zeros((40, 40, 3), dtype=np.uint8))


def test_where_only_the_backbone_fails_to_compile_it_runs_eagerly(make_config, monkeypatch, one_thread):
    """A dynamic-shape compile of the backbone meets compiler bugs the static transformer does not (seen: a
    sympy range error at batch 2 on the CPU): one warning, then the same outputs with an eager backbone."""
    monkeypatch.setattr(compiled, "_compile", _failing_compile({"image_features"}))
    model = _model(make_config())
    tensors = _tensors()
    alone = _alone(model, tensors)
    runner = CompiledInference(model)
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match=r"it runs eagerly from now on, the transformer stays compiled"):
            first = runner(tensors[:2])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            second = runner(tensors[2:])
    _assert_equal_alone(first, alone[:2], 1e-5, 1e-6)
    _assert_equal_alone(second, alone[2:], 1e-5, 1e-6)


def test_cuda_graphs_declined_by_inductor_are_recorded_and_said(make_config, no_compile, monkeypatch, one_thread):
    """On CUDA inductor may skip CUDA graphs silently (a CPU tensor in the graph, ...): the runner counts its
    skips per compiled shape, warns, and its summary says so (simulated here: no GPU)."""
    model = _model(make_config())
    runner = CompiledInference(model)
    runner.mode = "reduce-overhead"
    declined = runner._detect

    def detect_with_a_skip(sources, masks):
        compiled.counters["inductor"]["cudagraph_skips"] += 1
        return declined(sources, masks)

    monkeypatch.setattr(runner, "_detect", detect_with_a_skip)
    with torch.inference_mode(), pytest.warns(RuntimeWarning, match=r"inductor did not use CUDA graphs for the trans"):
        runner(_tensors()[:1])
    assert runner.compiles[0]["cudagraph_skips"] == 1
    assert runner.summary().endswith("; CUDA graphs declined 1 time(s)")


@pytest.mark.slow  # inductor compiles C++ for the backbone and two transformer shapes: minutes on 2 cores
def test_compiled_on_cpu_equals_eager_and_one_bucket_serves_many_sizes(make_config, one_thread):
    """fp32; inductor reorders reductions, so a little more than the padding's rounding: allowed 1e-4 on the
    logits and 1e-5 on the normalized boxes."""
    torch._dynamo.reset()
    model = _model(make_config())
    tensors = _tensors([(96, 128), (70, 100), (96, 120), (80, 72), (128, 90), (100, 100)])
    alone = _alone(model, tensors)
    runner = CompiledInference(model)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        outputs = [runner(tensors[:2]), runner(tensors[2:3]), runner(tensors[3:])]  # batches 2, 1, 3
    _assert_equal_alone(outputs[0], alone[:2], 1e-4, 1e-5)
    _assert_equal_alone(outputs[1], alone[2:3], 1e-4, 1e-5)
    _assert_equal_alone(outputs[2], alone[3:], 1e-4, 1e-5)
    assert runner.buckets == [(128, 128)] and [r["batch"] for r in runner.compiles] == [">=2", "1"]
    # backbone (dynamic sizes, batch-1 groups), transformer batch >= 2, transformer batch 1: nothing recompiled
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 3
    print(runner.summary())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
def test_compiled_with_cuda_graphs_matches_eager_on_cuda(make_config, amp, monkeypatch):
    """fp32 (TF32 off): scores within 1e-5 of eager; bf16 autocast: within `test_predict`'s bf16 tolerance of
    eager fp32. The transformer replays as a CUDA graph (inductor declined none), also from a second thread, as
    `serve` runs it. The bf16 case leaves the backbone eager and batch 1 out, to compile less."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = _model(make_config()).cuda()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 70), (80, 60), (33, 90), (64, 64)]]
    eager = model.predict(images, threshold=0.0, batch_size=4)
    compile_inference(model, compile_backbone=not amp)
    runs = [model.predict(images, threshold=0.0, batch_size=4, amp=amp) for _ in range(3)]  # warm-up, record, replay
    if not amp:
        runs.append(model.predict(images[:1], threshold=0.0))  # batch 1: its own compile
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        runs.append(thread.submit(model.predict, images, threshold=0.0, batch_size=4, amp=amp).result())
    tolerance = dict(rtol=0.05, atol=1e-3) if amp else dict(rtol=1e-4, atol=1e-5)
    for run in runs:
        for expected, got in zip(eager, run):
            torch.testing.assert_close(got.scores.sort().values, expected.scores.sort().values, **tolerance)
    runner = model.compiled_inference
    print(runner.summary())
    assert runner.mode == "reduce-overhead" and all(record["cudagraph_skips"] == 0 for record in runner.compiles)
