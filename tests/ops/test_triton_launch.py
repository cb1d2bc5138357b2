"""Launching the Triton kernels: block sizes, and compile once per specialization with a warned fallback to
`reference` where the installed Triton cannot compile a case (compiler failures simulated)."""

import pytest
import torch

pytest.importorskip("triton")

from op_oracles import random_inputs as _inputs  # noqa: E402
from op_oracles import reference_with_grads as _reference_with_grads  # noqa: E402

from deformable_detr.ops import reference, triton_kernels, triton_launch  # noqa: E402
from deformable_detr.ops import triton as triton_backend  # noqa: E402


def test_block_sizes_shrink_for_small_grids_only():
    # Encoder of an 800x1066 image: 17821 rows x 8 heads = 1114 x 8 programs of the full 16 x 32 tile.
    assert triton_launch.block_sizes(17821, 8, 32) == (16, 32)
    # Decoder, 300 queries: 16 rows give 19 x 8 = 152 programs (< 256); 8 rows give 38 x 8 = 304.
    assert triton_launch.block_sizes(300, 8, 32) == (8, 32)
    assert triton_launch.block_sizes(600, 8, 32) == (16, 32)  # 38 x 8 = 304 programs at 16 rows
    # 100 rows: 56 programs at 16 rows, 104 at 8, 200 at 4; 4 rows x 32 channels = 128 elements, one per thread
    # of 4 warps, is the floor.
    assert triton_launch.block_sizes(100, 8, 32) == (4, 32)
    assert triton_launch.block_sizes(1, 1, 256) == (1, 256)


def _on_kernel_device(inputs):
    """The inputs on CUDA where the kernels are compiled (a GPU machine), else as they are (the interpreter)."""
    return inputs if triton_kernels.kernels_interpreted() else tuple(t.cuda() for t in inputs)


@pytest.fixture
def fresh_launch_state(monkeypatch):
    """Forget which specializations compiled and which warnings were given (module state) for one test."""
    monkeypatch.setattr(triton_launch, "_compiled", {})
    monkeypatch.setattr(triton_launch, "_warned", set())


def _failing_compile(calls):
    def compile_fails(kernel, grid, args, constexprs):
        calls.append(constexprs["HEAD_DIM"])
        raise RuntimeError("PassManager::run failed\nmore detail")

    return compile_fails


def test_compile_failure_warns_once_and_forward_runs_reference(monkeypatch, fresh_launch_state):
    calls = []
    monkeypatch.setattr(triton_launch, "_compile", _failing_compile(calls))
    inputs = _on_kernel_device(_inputs(2, 13, 2, 8, [[5, 7], [1, 1], [3, 2]], 2))
    with pytest.warns(RuntimeWarning) as record:
        first = triton_backend.forward(*inputs)
        second = triton_backend.forward(*inputs)
    assert len(record) == 1 and calls == [8]  # compiled (and failed) once; the second call knew
    message = str(record[0].message)
    assert f"Triton {triton_launch.triton.__version__} failed to compile the forward kernel" in message
    assert "torch.float64, D=8, L=3, P=2" in message and "PassManager::run failed)" in message
    expected = reference.forward(*inputs)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)


def test_compile_failure_warns_once_and_backward_differentiates_reference(monkeypatch, fresh_launch_state):
    monkeypatch.setattr(triton_launch, "_compile", _failing_compile([]))
    inputs = _inputs(2, 5, 2, 4, [[3, 5], [1, 1]], 2)
    grad_output = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="failed to compile the backward kernel for torch.float64, D=4, L=2, P=2"):
        grads = triton_backend.backward(*_on_kernel_device((grad_output, *inputs)))
    _, *expected = _reference_with_grads(grad_output, *inputs)  # autograd through grid_sample
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)


def test_compiles_once_per_specialization(monkeypatch, fresh_launch_state):
    compiled = []
    monkeypatch.setattr(triton_launch, "_compile", lambda kernel, grid, args, constexprs: compiled.append(constexprs))
    for D in (4, 4, 6):
        inputs = _on_kernel_device(_inputs(1, 3, 2, D, [[2, 3]], 1))
        torch.testing.assert_close(triton_backend.forward(*inputs), reference.forward(*inputs), rtol=1e-10, atol=1e-12)
    assert [c["HEAD_DIM"] for c in compiled] == [4, 6]


def test_launch_errors_are_not_swallowed(monkeypatch, fresh_launch_state):
    # Compiling succeeded; a failure of the launch itself is not a compiler bug and must surface.
    class FailingLaunch:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")

            return launch

    monkeypatch.setattr(triton_launch, "_compile", lambda *args: None)
    monkeypatch.setattr(triton_kernels, "kernels_interpreted", lambda: True)
    monkeypatch.setattr(triton_kernels, "forward_kernel", FailingLaunch())
    with pytest.raises(RuntimeError, match="illegal memory access"):
        triton_backend.forward(*_inputs(1, 2, 1, 4, [[2, 2]], 1))
