"""Helpers of the Streamlit app (``app/``) and the notebooks: opening datasets to browse, drawing
instances, projecting class embeddings. Not part of the library: ``maskx`` never imports it."""
