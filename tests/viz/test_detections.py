"""Drawing detections: boxes land on the given pixels in the class colour; the input is never modified."""

from __future__ import annotations

from PIL import Image

from deformable_detr.viz.detections import PALETTE, class_colour, draw_detections, save_grid


def test_box_outline_in_class_colour_at_the_given_pixels_and_input_untouched():
    image = Image.new("RGB", (200, 120), (128, 128, 128))
    before = image.tobytes()
    drawn = draw_detections(image, [[40, 50, 150, 110]], [2], scores=[0.9], class_names=["a", "b", "c"], width=2)
    assert image.tobytes() == before and drawn.size == image.size
    colour = PALETTE[2]
    assert drawn.getpixel((95, 110)) == colour  # bottom edge
    assert drawn.getpixel((150, 80)) == colour  # right edge
    assert drawn.getpixel((95, 80)) == (128, 128, 128)  # inside the box: untouched
    assert drawn.getpixel((5, 5)) == (128, 128, 128)  # far outside: untouched


def test_ground_truth_white_and_small_images_enlarged_with_their_boxes():
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    drawn = draw_detections(image, [], [], ground_truth_xyxy=[[2, 2, 12, 8]], width=2, min_side=100)
    assert drawn.size == (100, 50)  # enlarged by a whole factor (5)
    assert drawn.getpixel((10, 25)) == (255, 255, 255)  # left edge of the ground truth at x = 2 * 5


def test_colours_are_distinct_for_many_classes():
    colours = [class_colour(k) for k in range(91)]
    assert len(set(colours)) == 91
    assert all(all(0 <= c <= 255 for c in colour) for colour in colours)


def test_save_grid_tiles_images(tmp_path):
    tiles = [Image.new("RGB", (10, 8), (i * 40, 0, 0)) for i in range(5)]
    path = save_grid(tiles, tmp_path / "grid.png", columns=2)
    grid = Image.open(path)
    assert grid.size == (20, 24)
    assert grid.getpixel((15, 12)) == (120, 0, 0)  # tile 3: row 1, column 1
