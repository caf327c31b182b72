"""The app's sample images: which val images the pages offer first, and at what size they are
rendered when the val folder is absent. The release step saves the shipped model's masks on these
(``examples.json``), so both read these numbers from here."""

SAMPLE_IMAGES = 8  # the first val images (the study's saved examples are these too)
SAMPLE_SIZE = 256  # side of a rendered sample: val image k + 1 is render(1, k, SAMPLE_SIZE)
