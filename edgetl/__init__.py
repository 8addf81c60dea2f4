"""edgetl: from a folder of labelled images to a fast, small, benchmarked edge model."""

__version__ = "0.1.0"
