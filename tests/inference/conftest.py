"""Fixtures of the inference tests: a tiny saved model and a folder of images with bad files among them."""

import pytest
from inference_helpers import tiny_model, write_image


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """`save_pretrained` folder of `tiny_model()`."""
    directory = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(directory)
    return directory


@pytest.fixture
def image_folder(tmp_path):
    """images/: good images in two sub-folders with the same names, plus bad files.

    good: a/000000.jpg, b/000000.jpg, a/000000.png (same stem), b/gray.png (grayscale), c/deep/x.bmp;
    bad: bad/truncated.jpg, bad/notes.jpg (text), bad/empty.png (0 bytes); skipped: bad/readme.txt.
    """
    root = tmp_path / "images"
    good = [
        write_image(root / "a" / "000000.jpg", 60, 80, 1),
        write_image(root / "b" / "000000.jpg", 90, 50, 2),
        write_image(root / "a" / "000000.png", 40, 40, 3),
        write_image(root / "b" / "gray.png", 70, 70, 4, "L"),
        write_image(root / "c" / "deep" / "x.bmp", 33, 99, 5),
    ]
    source = write_image(tmp_path / "source.jpg", 64, 64, 6).read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.jpg").write_bytes(source[: len(source) // 3])
    (root / "bad" / "notes.jpg").write_text("not an image\n")
    (root / "bad" / "empty.png").write_bytes(b"")
    (root / "bad" / "readme.txt").write_text("hello\n")
    bad = [root / "bad" / name for name in ("empty.png", "notes.jpg", "truncated.jpg")]
    return root, good, bad
