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
