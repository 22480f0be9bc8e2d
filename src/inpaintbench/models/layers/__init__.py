"""Building blocks shared by several models (one small module per block)."""
