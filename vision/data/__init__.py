"""Dataset loaders (real file formats) and offline synthetic generators for ``vision``."""
