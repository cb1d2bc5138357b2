"""The public function: input validation, backend choice and fallbacks, torch.library registration."""

import sys
import warnings

import pytest
import torch

import deformable_detr.ops as ops
from deformable_detr.ops import cpu, multi_scale_deformable_attention, reference


@pytest.fixture
def inputs(make_inputs):
    return make_inputs(2, 5, 4, 8, [[5, 3], [2, 2]], 2, dtype=torch.float32)


def call(inputs, **overrides):
    names = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")
    arguments = dict(zip(names, inputs)) | overrides
    return multi_scale_deformable_attention(**arguments)


@pytest.mark.parametrize(
    "field, bad, match",
    [
        ("spatial_shapes", torch.tensor([[5, 3], [2, 3]]), "sum of H_l"),
        ("spatial_shapes", torch.tensor([5, 3, 2, 2]), r"spatial_shapes must be \(L=2, 2\)"),
        ("level_start_index", torch.tensor([0, 16]), "level_start_index .* inconsistent"),
        ("level_start_index", torch.tensor([0]), r"level_start_index must be \(L=2,\)"),
        ("value", torch.zeros(2, 19, 32), r"value must be \(B, S, M, D\)"),
        ("value", torch.zeros(3, 19, 4, 8), "does not match value"),
        ("sampling_locations", torch.zeros(2, 5, 4, 2, 2), r"sampling_locations must be \(B, Lq, M, L, P, 2\)"),
        ("attention_weights", torch.zeros(2, 5, 4, 2, 3), "attention_weights .* must be sampling_locations' shape"),
        ("attention_weights", torch.zeros(2, 5, 4, 2, 2, dtype=torch.float64), "must share a dtype"),
        ("value", torch.zeros(2, 19, 4, 8, dtype=torch.int64), "floating-point"),
        ("spatial_shapes", torch.tensor([[5.0, 3.0], [2.0, 2.0]]), "must be integer tensors"),
        ("backend", "cuda", "unknown backend 'cuda'; choose one of 'auto', 'reference', 'cpu', 'triton'"),
    ],
)
def test_invalid_inputs_raise_one_line_value_error(inputs, field, bad, match):
    with pytest.raises(ValueError, match=match) as error:
        call(inputs, **{field: bad})
    assert "\n" not in str(error.value)


def test_cpu_backend_rejects_non_cpu_tensors(inputs):
    device = "cuda" if torch.cuda.is_available() else "meta"  # meta: same check without a GPU
    value, spatial_shapes, level_start_index, locations, weights = (t.to(device) for t in inputs)
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        multi_scale_deformable_attention(value, spatial_shapes, level_start_index, locations, weights, backend="cpu")


def test_auto_uses_the_fused_kernel_on_cpu(inputs, monkeypatch):
    if not cpu.is_available():
        pytest.skip("the fused CPU kernel cannot be built here")
    calls = []
    monkeypatch.setattr(cpu, "forward", lambda *args: calls.append(1) or reference.forward(*args))
    call(inputs)
    assert calls == [1]


def test_auto_falls_back_to_reference_with_one_warning(inputs, monkeypatch):
    def broken():
        raise RuntimeError("the fused CPU kernel could not be built (no compiler); use backend='reference'")

    monkeypatch.setattr(cpu, "load_extension", broken)
    monkeypatch.setattr(ops, "_warned", set())
    with pytest.warns(RuntimeWarning, match="falls back to 'reference'.*no compiler"):
        out = call(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call stays quiet
        call(inputs)
    torch.testing.assert_close(out, reference.forward(*inputs))
    with pytest.raises(RuntimeError, match="could not be built"):
        call(inputs, backend="cpu")


def test_triton_backend_missing_raises_clear_error(inputs, monkeypatch):
    monkeypatch.setitem(sys.modules, "deformable_detr.ops.triton", None)  # the import fails
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="triton backend is unavailable"):
        call(inputs, backend="triton")


def test_all_backends_agree_with_reference(inputs):
    """auto and cpu on CPU tensors; triton (and auto) on CUDA tensors where there is a GPU, else triton
    interpreted on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 only without CUDA)."""
    expected = reference.forward(*inputs)
    cases = [("auto", "cpu")] + ([("cpu", "cpu")] if cpu.is_available() else [])
    if torch.cuda.is_available():
        cases.append(("auto", "cuda"))
    try:
        ops._triton_module()
        cases.append(("triton", "cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        pass
    for backend, device in cases:
        output = call(tuple(t.to(device) for t in inputs), backend=backend)
        assert output.device.type == device
        torch.testing.assert_close(output.cpu(), expected, rtol=1e-5, atol=1e-5, msg=f"{backend} on {device}")


def test_compile_fullgraph_matches_eager(inputs):
    value, spatial_shapes, level_start_index, locations, weights = (
        t.requires_grad_() if t.is_floating_point() else t for t in inputs
    )
    compiled = torch.compile(multi_scale_deformable_attention, fullgraph=True, backend="aot_eager")
    out = compiled(value, spatial_shapes, level_start_index, locations, weights)
    grads = torch.autograd.grad(out.square().sum(), (value, locations, weights))
    expected = reference.forward(value, spatial_shapes, level_start_index, locations, weights)
    expected_grads = torch.autograd.grad(expected.square().sum(), (value, locations, weights))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_export_captures_one_op(inputs):
    class Attention(torch.nn.Module):
        def forward(self, *args):
            return multi_scale_deformable_attention(*args)

    program = torch.export.export(Attention(), tuple(inputs))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets == ["deformable_detr.ms_deform_attn.default"]
    torch.testing.assert_close(program.module()(*inputs), reference.forward(*inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_custom_op_registration_passes_opcheck(make_inputs, backend):
    if backend == "cpu" and not cpu.is_available():
        pytest.skip("the fused CPU kernel cannot be built here")
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(1, 3, 2, 4, [[3, 2]], 2)
    args = (
        value.requires_grad_(),
        spatial_shapes,
        level_start_index,
        locations.requires_grad_(),
        weights.requires_grad_(),
        backend,
    )
    torch.library.opcheck(torch.ops.deformable_detr.ms_deform_attn.default, args)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_plain_ops(inputs):
    """torch.jit.trace (and the TorchScript-based ONNX exporter) get plain ops (the gather backend) under `auto`."""
    traced = torch.jit.trace(lambda *args: multi_scale_deformable_attention(*args), tuple(inputs), check_trace=False)
    assert "deformable_detr::ms_deform_attn" not in str(traced.graph)  # no custom-op node
    torch.testing.assert_close(traced(*inputs), reference.forward(*inputs))
