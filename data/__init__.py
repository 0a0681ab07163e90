"""Data: the embedded demo dataset and the image-folder loaders (no optimizer, no model code)."""
