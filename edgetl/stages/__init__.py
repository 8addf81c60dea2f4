"""Build stages: each declares its inputs (fingerprinted) and writes its outputs into a cache folder."""
