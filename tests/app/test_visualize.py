"""Drawing instances for the app (maskx_app/visualize.py): set A in green, set B in red."""
from __future__ import annotations

import numpy as np

from maskx_app.visualize import GREEN, RED, Drawn, overlay


def test_overlay_colours_set_a_green_and_set_b_red():
    img = np.zeros((40, 40, 3), np.uint8)
    ma, mb = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    ma[5:15, 5:15] = True
    mb[25:35, 25:35] = True
    out = overlay(img, [Drawn([5, 5, 15, 15], ma, "a", 0.9, True), Drawn([25, 25, 35, 35], mb, "b", 0.8, False)],
                  labels=False)
    ga, rb = out[10, 10].astype(int), out[30, 30].astype(int)
    assert ga[1] > ga[0] and ga[1] > ga[2] and np.argmax(GREEN) == 1
    assert rb[0] > rb[1] and rb[0] > rb[2] and np.argmax(RED) == 0


def test_labels_take_the_asked_size_and_stay_inside_the_image():
    img = np.zeros((100, 100, 3), np.uint8)
    d = Drawn([80, 40, 99, 70], None, "a long class name", 0.9, False, "IoU 0.50")  # the label is wider than the room
    out = overlay(img, [d], label_size=14)
    band = (out[..., 0] > 200) & (out[..., 1] < 80)  # the label's red band
    rows, cols = np.nonzero(band[:40])
    assert rows.min() >= 40 - 17 and cols.max() <= 99 and cols.min() < 80  # moved left to fit, 14 + 3 px tall
    small = overlay(img, [d])  # PIL's 11-pixel bitmap font
    assert np.nonzero((small[..., 0] > 200) & (small[..., 1] < 80))[0].min() == 40 - 11
