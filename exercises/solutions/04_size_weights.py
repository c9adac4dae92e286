"""Solution to exercise 4: the project's own size_weights (losses.py) is the answer."""
from losses import size_weights  # noqa: F401
