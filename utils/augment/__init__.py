"""Training-time augmentation: per-sample ops, static copies, batch mixing."""
