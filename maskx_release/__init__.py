"""The release step: ``python -m maskx ship`` trains, exports and measures the shipped 3000-class
model (``models/maskx-3k``). Not part of the library: ``maskx`` never imports it."""
