"""Models: the factory and weights, pooling heads, EMA, checkpoint averaging."""
