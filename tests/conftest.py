"""Shared test set-up.

TRITON_INTERPRET must be set before `triton` is first imported, so Triton kernels run on CPU
tensors when no GPU is present (with a GPU they run for real, on CUDA tensors).

Skips: tests marked `gpu` skip without CUDA; nothing else may skip. A run in which any other test (or
test module) skipped fails, listing them, so a missing package or tool cannot turn a test off unseen.
DDETR_ALLOW_SKIPS=1 lets such a run pass (it still lists the skips): for a machine known to lack optional
tools, e.g. the GPU check (`make gpu-check`). A test that fails only because a module is not installed here
(ModuleNotFoundError naming it) is reported as skipped, with that reason, instead of failed.
"""

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from deformable_detr.models.config import ModelConfig  # noqa: E402
from tiny_models import VARIANTS, tiny_config  # noqa: E402

GPU_SKIP_REASON = "needs a CUDA device (gpu marker)"
_bad_skips: list[str] = []


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=GPU_SKIP_REASON))


def _missing_module(error: BaseException | None) -> str | None:
    """The top-level name of a module that `error` (or an error it was raised from) could not import and that
    is not installed here; None otherwise."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ModuleNotFoundError) and error.name:
            top = error.name.split(".")[0]
            try:
                installed = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError):
                installed = False
            if not installed:
                return top
        error = error.__cause__ or error.__context__
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_make_collect_report(collector):
    """A test module that cannot be imported because a module is not installed here is skipped, naming it."""
    if not isinstance(collector, pytest.Module):
        return None
    try:
        collector.obj  # imports the test module; the default collection then reuses it  # noqa: B018
    except pytest.skip.Exception:
        return None  # a module-level importorskip: the default hook reports it
    except Exception as error:
        missing = _missing_module(error)
        if missing:
            reason = f"Skipped: needs {missing}, which is not installed here"
            return pytest.CollectReport(collector.nodeid, "skipped", (str(collector.path), 0, reason), [])
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.excinfo is not None:
        missing = _missing_module(call.excinfo.value)
        if missing:
            path, line, _ = item.location
            report.outcome = "skipped"
            report.longrepr = (path, (line or 0) + 1, f"Skipped: needs {missing}, which is not installed here")
    return report


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        if "gpu" in report.keywords and not torch.cuda.is_available():
            return
        _bad_skips.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_collectreport(report):
    if report.skipped:
        _bad_skips.append(f"{report.nodeid or '(collection)'}: {_skip_reason(report)}")


def _skips_allowed() -> bool:
    return os.environ.get("DDETR_ALLOW_SKIPS", "") not in ("", "0")


def pytest_sessionfinish(session, exitstatus):
    if _bad_skips and not _skips_allowed() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not _bad_skips:
        return
    allowed = _skips_allowed()
    terminalreporter.section(
        f"skipped tests ({'allowed by DDETR_ALLOW_SKIPS' if allowed else 'the run FAILS'}): only `gpu` tests may skip"
    )
    for line in _bad_skips:
        terminalreporter.line(line)
    if not allowed:
        terminalreporter.line(
            f"{len(_bad_skips)} test(s) or module(s) skipped: install what they need (`make setup` installs the dev "
            "extra; the browser test needs chromium), or set DDETR_ALLOW_SKIPS=1 where that is not possible"
        )


def _synthetic(tmp_path_factory, name: str, num_train: int, seed: int):
    """`num_train` train and 2 val synthetic images of 64 px, rendered once per session."""
    from deformable_detr.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp(name)
    make_dataset(root, num_train=num_train, num_val=2, image_size=64, seed=seed, num_workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """4 train and 2 val images (the training and experiment tests share it)."""
    return _synthetic(tmp_path_factory, "synthetic", num_train=4, seed=0)


@pytest.fixture(scope="session")
def dataset16(tmp_path_factory):
    """16 train and 2 val images (8 batches of 2 per epoch)."""
    return _synthetic(tmp_path_factory, "synthetic16", num_train=16, seed=1)


@pytest.fixture
def one_thread():
    """torch on 1 thread for the test (much faster than 2 on a shared, busy 2-core machine), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_tf32():
    """fp32 really fp32 on CUDA for the test (TF32 convolutions/matmuls round to 10 bits), restored after."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ------------------------------------------------------------ tiny model configs (models/ and pipeline/ tests)


@pytest.fixture(params=sorted(VARIANTS))
def variant_config(request) -> ModelConfig:
    """A tiny config of each variant in `tiny_models.VARIANTS`."""
    return tiny_config(**VARIANTS[request.param])


@pytest.fixture
def make_config():
    """Factory of tiny configs: make_config(**overrides) -> ModelConfig."""
    return tiny_config
