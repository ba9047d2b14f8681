"""The two HeadModel backends: TransformerLens 4.x and nnsight 0.8."""
